//! A resource encoded once: its bytes are shared by every connection.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};
use sextant_core::Hostname;

/// The resource types Sextant serves, in the order proxies must receive
/// them: clusters before their endpoints, endpoints before the listeners
/// and routes that use them; secrets (SDS, a router's certificates) last:
/// a listener that names one waits for it, warming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ResourceType {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret` (only a
    /// router proxy's gateway certificates).
    Secret,
}

impl ResourceType {
    /// How many types there are (the length of per-type arrays).
    pub const COUNT: usize = 5;

    /// Every type, in push order.
    pub const ALL: [ResourceType; ResourceType::COUNT] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// The type URL on the wire.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    /// The type for a type URL, if Sextant serves it.
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Index into per-type arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short name: `cds`, `eds`, `lds`, `rds`, `sds`.
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
            ResourceType::Secret => "sds",
        }
    }

    /// State-of-the-world responses for Listener and Cluster carry the
    /// complete set: a missing resource is deleted. For the other types a
    /// response carries only some resources.
    pub fn is_full_state(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// One encoded resource. Immutable; shared by `Arc`.
#[derive(Clone, PartialEq, Eq)]
pub struct Resource {
    /// Its type.
    pub kind: ResourceType,
    /// Its name (cluster name, listener name, ...).
    pub name: Arc<str>,
    /// Hash of the encoded resource: equal content, equal version, on every
    /// replica and after every restart.
    pub version: Arc<str>,
    /// The encoded `google.protobuf.Any` wrapping the resource.
    pub any: Bytes,
    /// True for an empty placeholder answering a subscription to a name that
    /// does not exist (an empty ClusterLoadAssignment or RouteConfiguration).
    pub placeholder: bool,
    /// The service it was translated from, when it belongs to one (a
    /// service's clusters, assignments, gRPC listeners and routes, its
    /// explicit TCP listeners): what per-proxy scoping filters by. Resources
    /// of no one service (the outbound HTTP listener and table, a capture
    /// proxy's own layout, placeholders) have none.
    pub owner: Option<Hostname>,
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("bytes", &self.any.len())
            .field("owner", &self.owner)
            .finish()
    }
}

impl Resource {
    /// Encodes `message` once and derives its version from the bytes.
    pub fn encode<M: Message>(
        kind: ResourceType,
        name: impl Into<Arc<str>>,
        message: &M,
    ) -> Resource {
        Resource::from_encoded(kind, name, &message.encode_to_vec())
    }

    /// A resource from its already encoded message.
    pub fn from_encoded(kind: ResourceType, name: impl Into<Arc<str>>, value: &[u8]) -> Resource {
        let version = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(value));
        Resource::from_parts(kind, name, version.into(), &[value])
    }

    /// A resource whose encoded message is the concatenation of `parts`
    /// (encoded earlier, each a whole field of the message), with a version
    /// the caller derived from the content: the `Any` is written around
    /// them in one copy.
    pub fn from_parts(
        kind: ResourceType,
        name: impl Into<Arc<str>>,
        version: Arc<str>,
        parts: &[&[u8]],
    ) -> Resource {
        let value_len: usize = parts.iter().map(|p| p.len()).sum();
        let type_url = kind.type_url().as_bytes();
        let mut any =
            Vec::with_capacity(len_field_size(1, type_url.len()) + len_field_size(2, value_len));
        put_len_field(&mut any, 1, type_url);
        put_len_header(&mut any, 2, value_len);
        for p in parts {
            any.extend_from_slice(p);
        }
        Resource {
            kind,
            name: name.into(),
            version,
            any: any.into(),
            placeholder: false,
            owner: None,
        }
    }

    /// The same resource, belonging to `host`.
    pub fn owned_by(mut self, host: &Hostname) -> Resource {
        self.owner = Some(host.clone());
        self
    }

    /// The resource's own encoded bytes (the `Any`'s value).
    pub fn value(&self) -> Result<&[u8], prost::DecodeError> {
        let any = envoy_types::pb::google::protobuf::Any::decode(self.any.as_ref())?;
        // Find the value inside our own buffer rather than copying it.
        let start = self.any.len() - any.value.len();
        Ok(&self.any[start..])
    }

    /// A 64-bit digest of (name, version), combined by XOR into the version
    /// of a whole set of resources.
    pub fn digest(name: &str, version: &str) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(version.as_bytes());
        h.digest()
    }
}

/// Bytes a length-delimited field takes: key, length, payload. (Protobuf's
/// primitives, shared by the layouts that write around encoded bytes:
/// the `Any` here, the responses in `server/codec.rs`.)
pub(crate) fn len_field_size(tag: u32, len: usize) -> usize {
    encoded_len_varint(u64::from(tag << 3 | 2)) + encoded_len_varint(len as u64) + len
}

/// Writes a length-delimited field (string, bytes or message).
pub(crate) fn put_len_field(buf: &mut impl BufMut, tag: u32, payload: &[u8]) {
    put_len_header(buf, tag, payload.len());
    buf.put_slice(payload);
}

/// Writes a length-delimited field's key and length; the payload follows.
pub(crate) fn put_len_header(buf: &mut impl BufMut, tag: u32, len: usize) {
    encode_varint(u64::from(tag << 3 | 2), buf);
    encode_varint(len as u64, buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn the_any_decodes_and_the_version_follows_content() {
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            ..Default::default()
        };
        let r = Resource::encode(ResourceType::Endpoint, "c", &cla);
        let any = Any::decode(r.any.as_ref()).expect("any");
        assert_eq!(any.type_url, ResourceType::Endpoint.type_url());
        assert_eq!(
            ClusterLoadAssignment::decode(any.value.as_slice()).expect("cla"),
            cla
        );
        assert_eq!(r.value().expect("value"), any.value.as_slice());

        let again = Resource::encode(ResourceType::Endpoint, "c", &cla);
        assert_eq!(r.version, again.version, "same content, same version");
        let other = ClusterLoadAssignment {
            cluster_name: "d".into(),
            ..Default::default()
        };
        assert_ne!(
            r.version,
            Resource::encode(ResourceType::Endpoint, "d", &other).version
        );
        assert_eq!(r.version.len(), 16);
    }

    #[test]
    fn type_urls_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(
            ResourceType::from_type_url("type.googleapis.com/envoy.service.runtime.v3.Runtime"),
            None
        );
    }
}
