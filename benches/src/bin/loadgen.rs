//! The ADS load generator. See BENCHMARKS.md.
//!
//! ```text
//! loadgen run   --scenario s1|s2|s3|s4|s5|s6 [--quick] [--delta] [--proxies N] [--json (s6)]
//! loadgen serve --services N --endpoints M     (server under test; spawned by run)
//! loadgen floor --services N --endpoints M [--burst C]  (null server: pre-encoded replies; spawned by run)
//! loadgen serve-file --file PATH               (S6: Sextant on a registry file; spawned by run)
//! ```
//!
//! `run` starts the server as its own process (so its CPU time and peak RSS
//! come from /proc), connects N simulated proxies that subscribe like Envoy
//! (clusters, then endpoints, then listeners, then routes) and ACK every
//! response, drives changes through the server's control port, and times
//! change -> last ACK on one clock. Each scenario runs against the floor too,
//! and results are reported as ratios to it.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use sextant_benches::loadgen;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Threads are named after the role, so that a system-wide profile
    // (`perf record -a`) can tell the server, the floor and the generator
    // apart (`perf report --comm serve`): they are one binary.
    let role = args.first().map_or("loadgen", String::as_str);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(role)
        .enable_all()
        .build()
        .expect("runtime");
    let code = runtime.block_on(loadgen::main(args));
    std::process::exit(code);
}
