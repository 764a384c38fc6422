//! The gRPC codec for ADS: requests are decoded with prost; responses are
//! written straight from the shared, pre-encoded resource bytes, so a
//! connection costs a copy into its socket buffer and nothing more.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{Buf, BufMut};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::request::SotwRequest;
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
    /// The resources carried, with their encoding shared by every response
    /// that carries the same batch.
    pub resources: Arc<Batch>,
    /// Delta only: names removed.
    pub removed: Vec<Arc<str>>,
    /// When the first change it carries reached the publisher (none for a
    /// first answer): the send latency is measured from it.
    pub changed_at: Option<tokio::time::Instant>,
}

/// Resources sent together. Their part of the response (the repeated
/// `resources` field) is encoded the first time it is sent on each wire and
/// shared from then on: a thousand connections sending the same batch copy
/// nothing and allocate nothing for it.
#[derive(Default)]
pub struct Batch {
    resources: Vec<Arc<Resource>>,
    encoded: [std::sync::OnceLock<Encoded>; 2],
}

/// A batch's `resources` fields on one wire, as chunks.
struct Encoded {
    chunks: Vec<bytes::Bytes>,
    len: usize,
}

impl From<Vec<Arc<Resource>>> for Batch {
    fn from(resources: Vec<Arc<Resource>>) -> Batch {
        Batch {
            resources,
            encoded: Default::default(),
        }
    }
}

impl std::ops::Deref for Batch {
    type Target = [Arc<Resource>];
    fn deref(&self) -> &[Arc<Resource>] {
        &self.resources
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.resources).finish()
    }
}

/// Resources at least this large are sent as their shared bytes; smaller
/// pieces are copied together, once per batch, so that a response is a few
/// large chunks, not thousands of tiny ones.
const SHARE_AT: usize = 1024;

impl Batch {
    /// The `resources` fields for `wire`, encoded on first use.
    fn encoded(&self, wire: Wire) -> &Encoded {
        self.encoded[wire as usize].get_or_init(|| {
            let mut chunks = Vec::new();
            let mut len = 0;
            let mut buf = bytes::BytesMut::new();
            for r in &self.resources {
                let start = buf.len();
                match wire {
                    Wire::Sotw => put_len_header(&mut buf, 2, r.any.len()),
                    Wire::Delta => {
                        put_len_header(&mut buf, 2, delta_resource_len(r));
                        put_len_field(&mut buf, 3, r.name.as_bytes());
                        put_len_field(&mut buf, 1, r.version.as_bytes());
                        put_len_header(&mut buf, 2, r.any.len());
                    }
                }
                len += buf.len() - start + r.any.len();
                if r.any.len() >= SHARE_AT {
                    chunks.push(buf.split().freeze());
                    chunks.push(r.any.clone());
                } else {
                    buf.put_slice(&r.any);
                }
            }
            chunks.push(buf.freeze());
            chunks.retain(|c| !c.is_empty());
            Encoded { chunks, len }
        })
    }
}

impl Outbound {
    /// Size of the encoded message in bytes.
    pub fn encoded_len(&self) -> usize {
        let mut n = len_field_size(1, self.version_info.len())
            + self.resources.encoded(self.wire).len
            + len_field_size(4, self.kind.type_url().len())
            + len_field_size(5, self.nonce.len());
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
        for r in self.resources.iter() {
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

impl Outbound {
    /// The response as one gRPC length-prefixed message, in chunks: the
    /// batch's shared encoding between this response's own head (length,
    /// version) and tail (type, nonce, removals). Nothing but head and tail
    /// is copied or kept per connection.
    pub fn frames(&self) -> Vec<bytes::Bytes> {
        let len = self.encoded_len();
        let body = self.resources.encoded(self.wire);
        let mut chunks = Vec::with_capacity(body.chunks.len() + 2);
        let mut buf = bytes::BytesMut::with_capacity(64 + self.version_info.len());
        // gRPC message prefix: not compressed, then the length (big-endian).
        buf.put_u8(0);
        buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        put_len_field(&mut buf, 1, self.version_info.as_bytes());
        chunks.push(buf.split().freeze());
        chunks.extend(body.chunks.iter().cloned());
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

/// An ADS request as the server decodes it.
pub trait DecodeRequest: Sized + Send + 'static {
    /// Decodes one message, all of `src`.
    fn decode_request(src: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

fn malformed(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed xDS request: {e}"))
}

impl DecodeRequest for DeltaDiscoveryRequest {
    fn decode_request(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        DeltaDiscoveryRequest::decode(src).map_err(malformed)
    }
}

impl DecodeRequest for SotwRequest {
    fn decode_request(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        // Takes the message out of tonic's buffer without copying it.
        let raw = src.copy_to_bytes(src.remaining());
        SotwRequest::decode_shared(raw).map_err(malformed)
    }
}

/// Codec for one ADS method: decodes `Req`, encodes [`Outbound`].
pub struct AdsCodec<Req>(PhantomData<fn() -> Req>);

impl<Req> Default for AdsCodec<Req> {
    fn default() -> Self {
        AdsCodec(PhantomData)
    }
}

impl<Req: DecodeRequest> Codec for AdsCodec<Req> {
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

/// Reads requests with [`DecodeRequest`].
pub struct RequestDecoder<Req>(PhantomData<fn() -> Req>);

impl<Req: DecodeRequest> Decoder for RequestDecoder<Req> {
    type Item = Req;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        Req::decode_request(src).map(Some)
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
            resources: Arc::new(vec![cla("a"), cla("b")].into()),
            removed: if wire == Wire::Delta {
                vec!["gone".into()]
            } else {
                vec![]
            },
            changed_at: None,
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
            let mut resources = out.resources.to_vec();
            resources.push(shared.clone());
            out.resources = Arc::new(resources.into());
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
            // Another response with the same batch: its own version and
            // nonce, the same bytes for the resources.
            let other = Outbound {
                version_info: "v2".into(),
                nonce: "8".into(),
                ..out.clone()
            };
            let again = other.frames();
            assert_eq!(again.len(), frames.len());
            let (head, rest) = again.split_first().expect("head");
            let (tail, body) = rest.split_last().expect("tail");
            for (a, b) in body.iter().zip(&frames[1..]) {
                assert_eq!(a.as_ptr(), b.as_ptr(), "shared, not copied");
            }
            let mut want = Vec::new();
            other.write(&mut want);
            let all: Vec<u8> = again.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(&all[5..], &want[..]);
            assert!(head.len() < 32 && tail.len() < 128);
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
