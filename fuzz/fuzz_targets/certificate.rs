//! The SPIFFE id reader on arbitrary DER (after rustls verified a chain,
//! but it must not trust that), and the namespace in an id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_xds::server::tls;

fuzz_target!(|data: &[u8]| {
    if let Some(id) = tls::spiffe_id(data) {
        let _ = tls::spiffe_namespace(&id);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tls::spiffe_namespace(text);
        let _ = sextant_xds::identity::namespace_from_id(text);
    }
});
