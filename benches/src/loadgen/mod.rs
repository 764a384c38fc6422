//! The load generator: simulated proxies, the server under test, the floor.
//!
//! One file per role: `server.rs` (Sextant serving a generated mesh or a
//! registry file), `floor.rs` (the null server it is compared with),
//! `proxies.rs` (simulated SotW and delta proxies), `scenarios.rs` (the
//! runner: start the roles as processes, storm, change, measure) and
//! `report.rs` (the table). Arguments are parsed with clap, as the binary's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use sextant_core::{Health, MemoryRegistry, Service};
use sextant_testkit::fixtures;
use sextant_xds::resource::ResourceType;
use sextant_xds::server::codec::{Outbound, Wire};
use sextant_xds::server::{AdsHandler, AdsService, ResponseStream};
use sextant_xds::snapshot::Snapshot;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use sextant_testkit::ads::types::{CDS, EDS, LDS, RDS};

/// The CPU seconds process `pid` has used (utime + stime), from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

mod floor;
mod proxies;
mod report;
mod scenarios;
mod server;

use floor::*;
use proxies::*;
use report::*;
use scenarios::*;
use server::*;

/// The load generator's roles, one binary: `run` drives a scenario and
/// spawns the others as processes.
#[derive(clap::Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Sextant's ADS load generator (see BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(clap::Subcommand, Debug)]
enum Role {
    /// Run a scenario against Sextant and against the floor.
    Run(RunArgs),
    /// Sextant serving a generated mesh (spawned by `run`).
    Serve(MeshArgs),
    /// The null server: pre-encoded replies (spawned by `run`).
    Floor(FloorArgs),
    /// Sextant on a registry file, for S6 (spawned by `run`).
    ServeFile(FileArgs),
    /// What mutual TLS between two sidecars costs per new connection
    /// (see [`crate::handshake`]).
    Handshake(crate::handshake::HandshakeArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The scenario.
    #[arg(long, default_value = "s1", value_parser = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "dns"])]
    scenario: String,
    /// The same at 100 proxies / 100 services, in under a minute.
    #[arg(long)]
    quick: bool,
    /// Delta clients (S4 always is).
    #[arg(long)]
    delta: bool,
    /// Simulated proxies instead of the scenario's number.
    #[arg(long)]
    proxies: Option<usize>,
    /// S6: the registry as a JSON file instead of YAML.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct MeshArgs {
    /// Services in the generated mesh.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints per service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Spread the services over this many namespaces, `ns-0` (which holds
    /// the flipped service) to `ns-N-1`; 0: all in `mesh`.
    #[arg(long, default_value_t = 0)]
    namespaces: usize,
    /// Scope every proxy to its own namespace and `ns-0` (the default
    /// scope hosts `./*,ns-0/*`).
    #[arg(long)]
    scoped: bool,
}

#[derive(clap::Args, Debug)]
struct FloorArgs {
    #[command(flatten)]
    mesh: MeshArgs,
    /// Endpoint changes per pre-encoded burst (S3).
    #[arg(long, default_value_t = 0)]
    burst: usize,
}

#[derive(clap::Args, Debug)]
struct FileArgs {
    /// The registry file.
    #[arg(long)]
    file: String,
    /// Resolve services' DNS names in Sextant, asking this server.
    #[arg(long)]
    dns_server: Option<SocketAddr>,
}

/// Entry point, with the arguments after the program's name; returns the
/// exit code.
pub async fn main(args: Vec<String>) -> i32 {
    use clap::Parser;
    let cli = match Cli::try_parse_from(std::iter::once("loadgen".to_owned()).chain(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.role {
        Role::Serve(a) => serve(&a).await,
        Role::Floor(a) => floor(&a).await,
        Role::ServeFile(a) => serve_file(&a).await,
        Role::Run(a) => run(&a).await,
        Role::Handshake(a) => crate::handshake::run(&a).await,
    }
}
