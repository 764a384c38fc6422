//! Sotw ADS requests, several per input, through the server's decoding and
//! one connection's protocol state, with every due response planned and
//! encoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_xds::server::Wire;
use sextant_xds::server::fuzzing::Connection;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut conn = Connection::new(Wire::Sotw, common::snapshot());
    for message in common::messages(data) {
        conn.request(message);
    }
});
