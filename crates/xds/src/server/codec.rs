//! The gRPC codec for ADS: requests are decoded with prost; responses are
//! written straight from the shared, pre-encoded resource bytes, so a
//! connection costs a copy into its socket buffer and nothing more.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::BufMut;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::resource::{Resource, ResourceType, len_field_size, put_len_field, put_len_header};

/// Which of the two ADS methods a stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// `StreamAggregatedResources`: state of the world.
    Sotw,
    /// `DeltaAggregatedResources`: incremental.
    Delta,
}

/// One response, referring to shared resources.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// Which method's message to write.
    pub wire: Wire,
    /// The type.
    pub kind: ResourceType,
    /// `version_info` (SotW) or `system_version_info` (delta).
    pub version_info: String,
    /// The response nonce.
    pub nonce: String,
    /// The resources carried.
    pub resources: Vec<Arc<Resource>>,
    /// Delta only: names removed.
    pub removed: Vec<Arc<str>>,
}

impl Outbound {
    /// Size of the encoded message in bytes.
    pub fn encoded_len(&self) -> usize {
        let mut n = len_field_size(1, self.version_info.len())
            + len_field_size(4, self.kind.type_url().len())
            + len_field_size(5, self.nonce.len());
        for r in &self.resources {
            n += match self.wire {
                Wire::Sotw => len_field_size(2, r.any.len()),
                Wire::Delta => len_field_size(2, delta_resource_len(r)),
            };
        }
        for name in &self.removed {
            n += len_field_size(6, name.len());
        }
        n
    }

    fn write(&self, buf: &mut impl BufMut) {
        // DiscoveryResponse: version_info=1 resources=2 type_url=4 nonce=5.
        // DeltaDiscoveryResponse: system_version_info=1 resources=2 type_url=4
        // nonce=5 removed_resources=6; Resource: version=1 resource=2 name=3.
        put_len_field(buf, 1, self.version_info.as_bytes());
        for r in &self.resources {
            match self.wire {
                Wire::Sotw => put_len_field(buf, 2, &r.any),
                Wire::Delta => {
                    put_len_header(buf, 2, delta_resource_len(r));
                    put_len_field(buf, 3, r.name.as_bytes());
                    put_len_field(buf, 1, r.version.as_bytes());
                    put_len_field(buf, 2, &r.any);
                }
            }
        }
        put_len_field(buf, 4, self.kind.type_url().as_bytes());
        put_len_field(buf, 5, self.nonce.as_bytes());
        for name in &self.removed {
            put_len_field(buf, 6, name.as_bytes());
        }
    }
}

/// Resources at least this large are sent as their shared bytes; smaller
/// pieces are copied together so that a response is a few large chunks, not
/// thousands of tiny ones.
const SHARE_AT: usize = 1024;

impl Outbound {
    /// The response as one gRPC length-prefixed message, in chunks: large
    /// resources are the shared, already-encoded bytes themselves (nothing
    /// copied, nothing kept per connection once sent), the rest is copied
    /// into small buffers between them.
    pub fn frames(&self) -> Vec<bytes::Bytes> {
        let len = self.encoded_len();
        let mut chunks = Vec::new();
        let mut buf = bytes::BytesMut::with_capacity(256);
        // gRPC message prefix: not compressed, then the length (big-endian).
        buf.put_u8(0);
        buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        put_len_field(&mut buf, 1, self.version_info.as_bytes());
        for r in &self.resources {
            match self.wire {
                Wire::Sotw => put_len_header(&mut buf, 2, r.any.len()),
                Wire::Delta => {
                    put_len_header(&mut buf, 2, delta_resource_len(r));
                    put_len_field(&mut buf, 3, r.name.as_bytes());
                    put_len_field(&mut buf, 1, r.version.as_bytes());
                    put_len_header(&mut buf, 2, r.any.len());
                }
            }
            if r.any.len() >= SHARE_AT {
                chunks.push(buf.split().freeze());
                chunks.push(r.any.clone());
            } else {
                buf.put_slice(&r.any);
            }
        }
        put_len_field(&mut buf, 4, self.kind.type_url().as_bytes());
        put_len_field(&mut buf, 5, self.nonce.as_bytes());
        for name in &self.removed {
            put_len_field(&mut buf, 6, name.as_bytes());
        }
        chunks.push(buf.freeze());
        chunks.retain(|c| !c.is_empty());
        chunks
    }
}

fn delta_resource_len(r: &Resource) -> usize {
    len_field_size(3, r.name.len())
        + len_field_size(1, r.version.len())
        + len_field_size(2, r.any.len())
}

/// Codec for one ADS method: decodes `Req`, encodes [`Outbound`].
pub struct AdsCodec<Req>(PhantomData<fn() -> Req>);

impl<Req> Default for AdsCodec<Req> {
    fn default() -> Self {
        AdsCodec(PhantomData)
    }
}

impl<Req: Message + Default + Send + 'static> Codec for AdsCodec<Req> {
    type Encode = Outbound;
    type Decode = Req;
    type Encoder = OutboundEncoder;
    type Decoder = RequestDecoder<Req>;

    fn encoder(&mut self) -> Self::Encoder {
        OutboundEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(PhantomData)
    }
}

/// Writes [`Outbound`] messages.
pub struct OutboundEncoder;

impl Encoder for OutboundEncoder {
    type Item = Outbound;
    type Error = Status;

    fn encode(&mut self, item: Outbound, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.write(dst);
        Ok(())
    }
}

/// Reads requests with prost.
pub struct RequestDecoder<Req>(PhantomData<fn() -> Req>);

impl<Req: Message + Default> Decoder for RequestDecoder<Req> {
    type Item = Req;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        Req::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed xDS request: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };

    fn outbound(wire: Wire) -> Outbound {
        let cla = |n: &str| {
            Arc::new(Resource::encode(
                ResourceType::Endpoint,
                n,
                &ClusterLoadAssignment {
                    cluster_name: n.into(),
                    ..Default::default()
                },
            ))
        };
        Outbound {
            wire,
            kind: ResourceType::Endpoint,
            version_info: "v1".into(),
            nonce: "7".into(),
            resources: vec![cla("a"), cla("b")],
            removed: if wire == Wire::Delta {
                vec!["gone".into()]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn sotw_bytes_decode_as_a_discovery_response() {
        let out = outbound(Wire::Sotw);
        let mut buf = Vec::new();
        out.write(&mut buf);
        assert_eq!(buf.len(), out.encoded_len());
        let msg = DiscoveryResponse::decode(buf.as_slice()).expect("decodes");
        assert_eq!(msg.version_info, "v1");
        assert_eq!(msg.nonce, "7");
        assert_eq!(msg.type_url, ResourceType::Endpoint.type_url());
        assert_eq!(msg.resources.len(), 2);
        assert_eq!(msg.resources[1].type_url, ResourceType::Endpoint.type_url());
        let cla = ClusterLoadAssignment::decode(msg.resources[1].value.as_slice()).expect("cla");
        assert_eq!(cla.cluster_name, "b");
    }

    #[test]
    fn frames_are_the_same_bytes_with_a_grpc_prefix_and_share_large_resources() {
        use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;
        let big = ClusterLoadAssignment {
            cluster_name: "big".into(),
            endpoints: vec![LocalityLbEndpoints::default(); 600],
            ..Default::default()
        };
        for wire in [Wire::Sotw, Wire::Delta] {
            let mut out = outbound(wire);
            let shared = Arc::new(Resource::encode(ResourceType::Endpoint, "big", &big));
            assert!(shared.any.len() >= SHARE_AT);
            out.resources.push(shared.clone());
            let frames = out.frames();
            let all: Vec<u8> = frames.iter().flat_map(|c| c.iter().copied()).collect();
            let mut want = Vec::new();
            out.write(&mut want);
            assert_eq!(all[0], 0, "not compressed");
            assert_eq!(
                u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize,
                want.len()
            );
            assert_eq!(&all[5..], &want[..], "{wire:?}");
            assert!(
                frames.iter().any(|c| c.as_ptr() == shared.any.as_ptr()),
                "the large resource is sent as its shared bytes"
            );
        }
    }

    #[test]
    fn delta_bytes_decode_as_a_delta_discovery_response() {
        let out = outbound(Wire::Delta);
        let mut buf = Vec::new();
        out.write(&mut buf);
        assert_eq!(buf.len(), out.encoded_len());
        let msg = DeltaDiscoveryResponse::decode(buf.as_slice()).expect("decodes");
        assert_eq!(msg.system_version_info, "v1");
        assert_eq!(msg.removed_resources, ["gone"]);
        assert_eq!(msg.resources.len(), 2);
        assert_eq!(msg.resources[0].name, "a");
        assert_eq!(msg.resources[0].version, out.resources[0].version.as_ref());
        let any = msg.resources[0].resource.as_ref().expect("any");
        assert_eq!(
            ClusterLoadAssignment::decode(any.value.as_slice())
                .expect("cla")
                .cluster_name,
            "a"
        );
    }
}
