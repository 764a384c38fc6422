//! A state-of-the-world request decoded for the server's needs.
//!
//! Envoy restates its whole subscription in every SotW request: an EDS ACK
//! from a proxy with a thousand clusters carries a thousand names (~35 KB),
//! and prost's `DiscoveryRequest` allocates a `String` for each, on every
//! ACK, only for the server to find the list unchanged. [`SotwRequest`] is
//! wire-compatible with `envoy.service.discovery.v3.DiscoveryRequest` but
//! keeps the names as one buffer plus a digest of them: the names are
//! checked as UTF-8 (as prost would) and hashed while decoding, and only
//! turned into strings when the digest says the subscription changed.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};

/// `DiscoveryRequest` with its `resource_names` kept as [`Names`].
/// Other fields (`resource_locators`, `dynamic_parameters`) are skipped.
#[derive(Default)]
pub struct SotwRequest {
    /// `version_info` (field 1).
    pub version_info: String,
    /// `node` (field 2).
    pub node: Option<Node>,
    /// `resource_names` (field 3).
    pub names: Names,
    /// `type_url` (field 4).
    pub type_url: String,
    /// `response_nonce` (field 5).
    pub response_nonce: String,
    /// `error_detail` (field 6).
    pub error_detail: Option<Status>,
}

impl std::fmt::Debug for SotwRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SotwRequest")
            .field("type_url", &self.type_url)
            .field("version_info", &self.version_info)
            .field("response_nonce", &self.response_nonce)
            .field("names", &self.names.len())
            .finish()
    }
}

/// The subscribed names, in request order: each one length-prefixed in one
/// buffer, with an order-sensitive digest.
pub struct Names {
    buf: Vec<u8>,
    count: usize,
    hasher: xxhash_rust::xxh3::Xxh3,
    scratch: String,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            buf: Vec::new(),
            count: 0,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            scratch: String::new(),
        }
    }
}

impl Names {
    /// How many names (duplicates included).
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Hash of the names in order; equal lists, equal digests.
    pub fn digest(&self) -> u64 {
        self.hasher.digest()
    }

    /// Appends a name.
    pub fn push(&mut self, name: &str) {
        self.hasher.update(name.as_bytes());
        self.hasher.update(&[0]);
        encoding::encode_varint(name.len() as u64, &mut self.buf);
        self.buf.extend_from_slice(name.as_bytes());
        self.count += 1;
    }

    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut rest = self.buf.as_slice();
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let len = encoding::decode_varint(&mut rest).ok()? as usize;
            let (name, tail) = rest.split_at_checked(len)?;
            rest = tail;
            // Checked as UTF-8 when decoded or pushed.
            std::str::from_utf8(name).ok()
        })
    }

    /// Decodes one name with prost's own string rules (length, UTF-8), into
    /// a scratch string whose allocation is reused, then appends it.
    fn merge(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if self.buf.capacity() == 0 {
            // The names are most of the message: one allocation, not a
            // doubling series of them, for a thousand names.
            self.buf.reserve(buf.remaining());
        }
        encoding::string::merge(wire_type, &mut self.scratch, buf, ctx)?;
        let name = std::mem::take(&mut self.scratch);
        self.push(&name);
        self.scratch = name;
        Ok(())
    }
}

impl prost::Message for SotwRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.version_info.is_empty() {
            encoding::string::encode(1, &self.version_info, buf);
        }
        if let Some(node) = &self.node {
            encoding::message::encode(2, node, buf);
        }
        for name in self.names.iter() {
            encoding::encode_key(3, WireType::LengthDelimited, buf);
            encoding::encode_varint(name.len() as u64, buf);
            buf.put_slice(name.as_bytes());
        }
        if !self.type_url.is_empty() {
            encoding::string::encode(4, &self.type_url, buf);
        }
        if !self.response_nonce.is_empty() {
            encoding::string::encode(5, &self.response_nonce, buf);
        }
        if let Some(status) = &self.error_detail {
            encoding::message::encode(6, status, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => encoding::string::merge(wire_type, &mut self.version_info, buf, ctx),
            2 => encoding::message::merge(
                wire_type,
                self.node.get_or_insert_with(Node::default),
                buf,
                ctx,
            ),
            3 => self.names.merge(wire_type, buf, ctx),
            4 => encoding::string::merge(wire_type, &mut self.type_url, buf, ctx),
            5 => encoding::string::merge(wire_type, &mut self.response_nonce, buf, ctx),
            6 => encoding::message::merge(
                wire_type,
                self.error_detail.get_or_insert_with(Status::default),
                buf,
                ctx,
            ),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let string = |tag: u32, s: &str| {
            if s.is_empty() {
                0
            } else {
                encoding::key_len(tag) + encoding::encoded_len_varint(s.len() as u64) + s.len()
            }
        };
        let message = |tag: u32, len: usize| {
            encoding::key_len(tag) + encoding::encoded_len_varint(len as u64) + len
        };
        string(1, &self.version_info)
            + self
                .node
                .as_ref()
                .map_or(0, |n| message(2, prost::Message::encoded_len(n)))
            + self
                .names
                .iter()
                .map(|n| {
                    encoding::key_len(3) + encoding::encoded_len_varint(n.len() as u64) + n.len()
                })
                .sum::<usize>()
            + string(4, &self.type_url)
            + string(5, &self.response_nonce)
            + self
                .error_detail
                .as_ref()
                .map_or(0, |s| message(6, prost::Message::encoded_len(s)))
    }

    fn clear(&mut self) {
        *self = SotwRequest::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use prost::Message;

    fn full() -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(Node {
                id: "proxy-1".into(),
                cluster: "c".into(),
                ..Default::default()
            }),
            resource_names: vec!["b".into(), "a".into(), "ünïcode".into(), "a".into()],
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            response_nonce: "7".into(),
            error_detail: Some(Status {
                code: 3,
                message: "rejected".into(),
                details: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_what_prost_decodes_and_encodes_back_the_same_bytes() {
        let bytes = full().encode_to_vec();
        let lazy = SotwRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(lazy.version_info, "v1");
        assert_eq!(lazy.node.as_ref().unwrap().id, "proxy-1");
        assert_eq!(
            lazy.names.iter().collect::<Vec<_>>(),
            ["b", "a", "ünïcode", "a"]
        );
        assert_eq!(lazy.names.len(), 4);
        assert_eq!(lazy.type_url, full().type_url);
        assert_eq!(lazy.response_nonce, "7");
        assert_eq!(lazy.error_detail.as_ref().unwrap().message, "rejected");
        assert_eq!(lazy.encoded_len(), bytes.len());
        assert_eq!(lazy.encode_to_vec(), bytes);
    }

    #[test]
    fn the_digest_follows_names_and_order() {
        let digest = |names: &[&str]| {
            let r = DiscoveryRequest {
                resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
                ..Default::default()
            };
            SotwRequest::decode(r.encode_to_vec().as_slice())
                .unwrap()
                .names
                .digest()
        };
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
        assert_ne!(digest(&["a", "b"]), digest(&["b", "a"]));
        assert_ne!(digest(&["ab"]), digest(&["a", "b"]));
        let mut pushed = Names::default();
        pushed.push("a");
        pushed.push("b");
        assert_eq!(pushed.digest(), digest(&["a", "b"]));
    }

    #[test]
    fn invalid_utf8_and_truncation_are_decode_errors() {
        // Field 3, length 2, bytes 0xff 0xfe.
        assert!(SotwRequest::decode(&[0x1a, 0x02, 0xff, 0xfe][..]).is_err());
        // Field 3, length 5, only 2 bytes.
        assert!(SotwRequest::decode(&[0x1a, 0x05, b'a', b'b'][..]).is_err());
    }
}
