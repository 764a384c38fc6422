//! The load generator: simulated proxies, the server under test, the floor.
//!
//! One file per role: `server.rs` (Sextant serving a generated mesh or a
//! registry file), `floor.rs` (the null server it is compared with),
//! `proxies.rs` (simulated SotW and delta proxies), `scenarios.rs` (the
//! runner: start the roles as processes, storm, change, measure) and
//! `report.rs` (the table). Arguments are still read by hand, not with clap.

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

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

/// Entry point; returns the exit code.
pub async fn main(args: Vec<String>) -> i32 {
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args).await,
        Some("floor") => floor(&args).await,
        Some("serve-file") => serve_file(&args).await,
        Some("run") => run(&args).await,
        _ => {
            eprintln!(
                "usage: loadgen run --scenario s1|s2|s3|s4|s5|s6 [--quick] [--delta] | serve | floor | serve-file"
            );
            2
        }
    }
}
