//! The outbound route table's wire layout, in one place.
//!
//! The table (`outbound_http`, one RouteConfiguration with every service's
//! virtual hosts and a catch-all) is the one resource that depends on every
//! service. Translating it whole on each change would cost the whole mesh;
//! instead each service keeps its virtual hosts encoded as the table's
//! `virtual_hosts` fields ([`VirtualHostsPart`]), and the table is their
//! concatenation after the `name` field: byte-identical to prost's encoding
//! of the whole message (a test in `translate/tests.rs` holds it to that).
//! Its version is derived from the parts' digests rather than by hashing
//! the whole table again: equal content, equal version, on every replica.

use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::route::v3::VirtualHost;
use prost::Message;

use crate::resource::{Resource, ResourceType};
use crate::translate::{OUTBOUND_HTTP, not_found_virtual_host};

/// RouteConfiguration's fields: `name` is 1, `virtual_hosts` 2.
const NAME_FIELD: u32 = 1;
const VIRTUAL_HOSTS_FIELD: u32 = 2;

/// Virtual hosts encoded as `virtual_hosts` fields of the table.
#[derive(Clone, Debug, Default)]
pub(crate) struct VirtualHostsPart {
    bytes: Bytes,
    /// xxh3 of `bytes`.
    digest: u64,
}

impl VirtualHostsPart {
    /// The digest of its bytes: equal parts, equal digests.
    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }

    /// `vhosts`, encoded once.
    pub(crate) fn encode(vhosts: &[VirtualHost]) -> VirtualHostsPart {
        let mut buf = Vec::with_capacity(vhosts.iter().map(|v| v.encoded_len() + 8).sum());
        for vh in vhosts {
            prost::encoding::message::encode(VIRTUAL_HOSTS_FIELD, vh, &mut buf);
        }
        VirtualHostsPart {
            digest: xxhash_rust::xxh3::xxh3_64(&buf),
            bytes: buf.into(),
        }
    }

    /// The catch-all virtual host that ends every table (404).
    pub(crate) fn not_found() -> VirtualHostsPart {
        VirtualHostsPart::encode(&[not_found_virtual_host()])
    }
}

/// The outbound route table: `parts` in order (a service's each, in
/// hostname order), then `not_found`.
pub(crate) fn outbound<'a>(
    parts: impl Iterator<Item = &'a VirtualHostsPart>,
    not_found: &VirtualHostsPart,
) -> Resource {
    let mut name = Vec::with_capacity(OUTBOUND_HTTP.len() + 2);
    prost::encoding::string::encode(NAME_FIELD, &OUTBOUND_HTTP.to_owned(), &mut name);
    let mut digests = xxhash_rust::xxh3::Xxh3::new();
    digests.update(OUTBOUND_HTTP.as_bytes());
    let mut all: Vec<&[u8]> = vec![&name];
    for p in parts {
        all.push(&p.bytes);
        digests.update(&p.digest.to_le_bytes());
    }
    all.push(&not_found.bytes);
    digests.update(&not_found.bytes);
    let version: Arc<str> = format!("{:016x}", digests.digest()).into();
    Resource::from_parts(ResourceType::Route, OUTBOUND_HTTP, version, &all)
}
