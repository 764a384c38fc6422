//! Benchmarks for Sextant: `benches/hot_paths.rs` (criterion) and the ADS
//! load generator (`src/bin/loadgen.rs`, logic in [`loadgen`]). See
//! BENCHMARKS.md at the repository root.

#![forbid(unsafe_code)]
#![allow(clippy::expect_used, missing_docs)]

pub mod handshake;
pub mod loadgen;
