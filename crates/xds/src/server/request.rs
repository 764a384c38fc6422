//! A state-of-the-world request decoded for the server's needs.
//!
//! Envoy restates its whole subscription in every SotW request: an EDS ACK
//! from a proxy with a thousand clusters carries a thousand names (~35 KB),
//! and prost's `DiscoveryRequest` allocates a `String` for each, on every
//! ACK, only for the server to find the list unchanged. [`SotwRequest`] is
//! wire-compatible with `envoy.service.discovery.v3.DiscoveryRequest` but
//! keeps the names as one buffer plus a digest of them: the names are
//! checked as UTF-8 (as prost would) and hashed while decoding, and only
//! turned into strings when the digest says the subscription changed. The
//! server decodes it with [`SotwRequest::decode_shared`], whose buffer is
//! the received message itself: nothing is copied or allocated per name.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status;
use prost::bytes::{Buf, BufMut, Bytes};
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

/// The subscribed names, in request order, with an order-sensitive digest.
/// They stay where they were received: `raw` is protobuf whose field-3
/// entries are the names (the whole request, when decoded by the server).
#[derive(Default)]
pub struct Names {
    raw: Bytes,
    /// Where in `raw` the runs of consecutive name entries are.
    runs: Vec<std::ops::Range<usize>>,
    count: usize,
    hasher: xxhash_rust::xxh3::Xxh3,
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

    /// Counts and hashes a name found in `raw`.
    /// Counts `count` names whose encoded entries (key, length, name) are
    /// `entries`; the digest is over the entries, in order.
    fn absorb(&mut self, entries: &[u8], count: usize) {
        self.hasher.update(entries);
        self.count += count;
    }

    /// Appends a name (for building requests, and for prost's decoding from
    /// a buffer that is not contiguous).
    pub fn push(&mut self, name: &str) {
        // Takes the buffer back without copying it when nothing else shares
        // it (always, while building), so pushing n names is O(n).
        let mut raw: Vec<u8> = std::mem::take(&mut self.raw).into();
        let start = raw.len();
        encoding::encode_key(3, WireType::LengthDelimited, &mut raw);
        encoding::encode_varint(name.len() as u64, &mut raw);
        raw.extend_from_slice(name.as_bytes());
        self.absorb(&raw[start..], 1);
        match self.runs.last_mut() {
            Some(run) if run.end == start => run.end = raw.len(),
            _ => self.runs.push(start..raw.len()),
        }
        self.raw = raw.into();
    }

    /// True when `entries` is exactly the names' encoded entries, in order
    /// (what the digest is computed over).
    pub(crate) fn entries_equal(&self, entries: &[u8]) -> bool {
        let mut rest = entries;
        for run in &self.runs {
            let Some((head, tail)) = rest.split_at_checked(run.len()) else {
                return false;
            };
            if head != &self.raw[run.clone()] {
                return false;
            }
            rest = tail;
        }
        rest.is_empty()
    }

    /// The names' encoded entries, in order, in one buffer.
    pub(crate) fn entries(&self) -> Vec<u8> {
        self.runs
            .iter()
            .flat_map(|r| &self.raw[r.clone()])
            .copied()
            .collect()
    }

    /// Checks and counts a run of `count` well-framed name entries.
    fn absorb_run(&mut self, run: &[u8], count: usize) -> Result<(), RequestError> {
        if std::str::from_utf8(run).is_err() {
            let mut rest = run;
            while !rest.is_empty() {
                encoding::decode_key(&mut rest)?;
                let len = encoding::decode_varint(&mut rest)? as usize;
                let (name, tail) = rest.split_at_checked(len).ok_or(RequestError::Truncated)?;
                std::str::from_utf8(name).map_err(|_| RequestError::NotUtf8)?;
                rest = tail;
            }
        }
        self.absorb(run, count);
        Ok(())
    }

    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut rest: &[u8] = &self.raw;
        std::iter::from_fn(move || {
            while !rest.is_empty() {
                let (tag, wire_type) = encoding::decode_key(&mut rest).ok()?;
                if tag != 3 {
                    encoding::skip_field(wire_type, tag, &mut rest, DecodeContext::default())
                        .ok()?;
                    continue;
                }
                let len = encoding::decode_varint(&mut rest).ok()? as usize;
                let (name, tail) = rest.split_at_checked(len)?;
                rest = tail;
                // Checked as UTF-8 when decoded or pushed.
                return std::str::from_utf8(name).ok();
            }
            None
        })
    }

    /// Decodes one name with prost's own string rules (length, UTF-8) from
    /// a buffer that may not be contiguous, then appends it.
    fn merge(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let mut name = String::new();
        encoding::string::merge(wire_type, &mut name, buf, ctx)?;
        self.push(&name);
        Ok(())
    }
}

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Malformed protobuf.
    #[error(transparent)]
    Protobuf(#[from] prost::DecodeError),
    /// A resource name longer than what is left of the message.
    #[error("a resource name runs past the end of the message")]
    Truncated,
    /// A resource name that is not UTF-8.
    #[error("a resource name is not valid UTF-8")]
    NotUtf8,
}

impl SotwRequest {
    /// Decodes the request in `raw`, keeping the names in place: they are
    /// checked (UTF-8, as prost would) and hashed, not copied.
    ///
    /// Names arrive as one run of consecutive entries, and each run is
    /// checked and hashed in one call rather than name by name (an Envoy
    /// restates a thousand names in every EDS ACK). Checking a run as a
    /// whole is exact: every name in it sits between ASCII bytes (the last
    /// byte of its length, the next entry's key), so no UTF-8 sequence can
    /// span two names; a run that fails is checked name by name, since a
    /// length of 128 or more has bytes that are not UTF-8 by themselves.
    pub fn decode_shared(raw: Bytes) -> Result<SotwRequest, RequestError> {
        let mut req = SotwRequest::default();
        let mut buf: &[u8] = &raw;
        // (start, count) of the run of name entries being read.
        let mut run: Option<(usize, usize)> = None;
        let offset = |buf: &[u8]| raw.len() - buf.len();
        while !buf.is_empty() {
            let entry = offset(buf);
            let (tag, wire_type) = encoding::decode_key(&mut buf)?;
            if tag != 3 {
                if let Some((start, count)) = run.take() {
                    req.names.absorb_run(&raw[start..entry], count)?;
                    req.names.runs.push(start..entry);
                }
                prost::Message::merge_field(
                    &mut req,
                    tag,
                    wire_type,
                    &mut buf,
                    DecodeContext::default(),
                )?;
                continue;
            }
            encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
            let len = encoding::decode_varint(&mut buf)?;
            let len = usize::try_from(len).map_err(|_| RequestError::Truncated)?;
            buf = buf.get(len..).ok_or(RequestError::Truncated)?;
            run.get_or_insert((entry, 0)).1 += 1;
        }
        if let Some((start, count)) = run {
            req.names.absorb_run(&raw[start..], count)?;
            req.names.runs.push(start..raw.len());
        }
        req.names.raw = raw;
        Ok(req)
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
        let shared = SotwRequest::decode_shared(bytes.clone().into()).unwrap();
        assert_eq!(shared.encode_to_vec(), bytes);
        assert_eq!(shared.names.len(), 4);
        let lazy = SotwRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(shared.names.digest(), lazy.names.digest());
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
    fn runs_of_names_split_by_other_fields_or_with_long_names_decode_the_same() {
        let long = "ü".repeat(100); // 200 bytes: a two-byte length
        let mut contiguous = Names::default();
        for n in ["a", &long, "b"] {
            contiguous.push(n);
        }
        // a, then type_url, then the long name and b.
        let mut raw = Vec::new();
        encoding::string::encode(3, &"a".to_owned(), &mut raw);
        encoding::string::encode(4, &"t".to_owned(), &mut raw);
        encoding::string::encode(3, &long, &mut raw);
        encoding::string::encode(3, &"b".to_owned(), &mut raw);
        let split = SotwRequest::decode_shared(raw.into()).unwrap();
        assert_eq!(split.type_url, "t");
        assert_eq!(split.names.len(), 3);
        assert_eq!(split.names.iter().collect::<Vec<_>>(), ["a", &long, "b"]);
        assert_eq!(split.names.digest(), contiguous.digest());
        assert_eq!(split.names.entries(), contiguous.entries());
        assert!(split.names.entries_equal(&contiguous.entries()));
        assert!(!split.names.entries_equal(&contiguous.entries()[1..]));
        assert!(!contiguous.entries_equal(&[]));
        // One bad name in the middle of a run is found.
        let mut bad = Vec::new();
        encoding::string::encode(3, &"a".to_owned(), &mut bad);
        bad.extend_from_slice(&[0x1a, 0x01, 0xc3]);
        encoding::string::encode(3, &long, &mut bad);
        assert!(matches!(
            SotwRequest::decode_shared(bad.into()),
            Err(RequestError::NotUtf8)
        ));
    }

    #[test]
    fn invalid_utf8_and_truncation_are_decode_errors() {
        let shared = |b: &'static [u8]| SotwRequest::decode_shared(Bytes::from_static(b));
        // Field 3, length 2, bytes 0xff 0xfe.
        assert!(SotwRequest::decode(&[0x1a, 0x02, 0xff, 0xfe][..]).is_err());
        assert!(matches!(
            shared(&[0x1a, 0x02, 0xff, 0xfe]),
            Err(RequestError::NotUtf8)
        ));
        // Field 3, length 5, only 2 bytes.
        assert!(SotwRequest::decode(&[0x1a, 0x05, b'a', b'b'][..]).is_err());
        assert!(matches!(
            shared(&[0x1a, 0x05, b'a', b'b']),
            Err(RequestError::Truncated)
        ));
        // Field 3 with the wrong wire type; a truncated node.
        assert!(shared(&[0x18, 0x01]).is_err());
        assert!(shared(&[0x12, 0x09, 0x0a]).is_err());
    }
}
