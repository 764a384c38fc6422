//! An in-process Sextant: memory registry -> aggregator -> publisher -> ADS
//! server on a free loopback port.
#![allow(dead_code, unreachable_pub, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use sextant_aggregate::{Aggregator, AggregatorConfig, AggregatorHandle};
use sextant_core::{
    Endpoint, MemoryRegistry, MemoryRules, Protocol, Registry, RuleSource, Service,
};
use sextant_testkit::ads::types;
use sextant_xds::{Debounce, Metrics, ServerConfig, TranslateOptions, XdsServer, publisher};
use tokio::sync::oneshot;

pub struct Harness {
    pub registry: MemoryRegistry,
    pub addr: SocketAddr,
    pub server: XdsServer,
    pub aggregator: AggregatorHandle,
    _stop: oneshot::Sender<()>,
}

/// Debounce short enough that tests do not wait, long enough to coalesce.
pub fn fast_debounce() -> Debounce {
    Debounce {
        endpoints: Duration::from_millis(2),
        config: Duration::from_millis(2),
        max_delay: Duration::from_millis(50),
    }
}

#[derive(Default)]
pub struct Options {
    pub translate: TranslateOptions,
    pub server: ServerConfig,
    /// A source of traffic rules, when the test uses rules.
    pub rules: Option<MemoryRules>,
    /// Serve TLS with these files instead of plaintext.
    pub tls: Option<sextant_xds::server::tls::TlsFiles>,
}

pub async fn start(services: Vec<Service>) -> Harness {
    start_with(
        MemoryRegistry::new("memory/test"),
        services,
        Options::default(),
    )
    .await
}

pub async fn start_with(
    registry: MemoryRegistry,
    services: Vec<Service>,
    options: Options,
) -> Harness {
    if !services.is_empty() {
        registry.reset(services);
    }
    let rule_sources: Vec<Arc<dyn RuleSource>> = options
        .rules
        .iter()
        .map(|r| Arc::new(r.clone()) as Arc<dyn RuleSource>)
        .collect();
    let (agg, aggregator) = Aggregator::with_rules(
        AggregatorConfig::default(),
        vec![Arc::new(registry.clone()) as Arc<dyn Registry>],
        rule_sources,
    )
    .expect("aggregator");
    tokio::spawn(agg.run());
    let metrics = Arc::new(Metrics::default());
    let (snapshots, task) = publisher(
        aggregator.view(),
        options.translate,
        fast_debounce(),
        metrics.clone(),
    );
    tokio::spawn(task);
    let server = XdsServer::new(snapshots, metrics, options.server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    match options.tls {
        Some(files) => {
            let tls = sextant_xds::server::tls::Tls::new(files, server.metrics().clone())
                .expect("TLS files load");
            tokio::spawn(server.clone().serve_tls(listener, tls, stopped));
        }
        None => {
            tokio::spawn(server.clone().serve(listener, stopped));
        }
    }
    Harness {
        registry,
        addr,
        server,
        aggregator,
        _stop: stop,
    }
}

/// A service with an HTTP port 8080 and a gRPC port 9090 on every address.
pub fn svc(host: &str, ips: &[&str]) -> Service {
    let mut s = Service::new(host)
        .with_port("http", 8080, Protocol::Http)
        .with_port("grpc", 9090, Protocol::Grpc);
    for ip in ips {
        s = s.with_endpoint(Endpoint::new(ip.parse().expect("addr")));
    }
    s
}

/// The name inside an encoded resource of any of the four types.
pub fn resource_name(any: &Any) -> String {
    let v = any.value.as_slice();
    match any.type_url.as_str() {
        types::CDS => Cluster::decode(v).expect("cluster").name,
        types::EDS => ClusterLoadAssignment::decode(v).expect("cla").cluster_name,
        types::LDS => Listener::decode(v).expect("listener").name,
        types::RDS => RouteConfiguration::decode(v).expect("route").name,
        other => panic!("unexpected type {other}"),
    }
}

pub fn names(resources: &[Any]) -> Vec<String> {
    let mut v: Vec<String> = resources.iter().map(resource_name).collect();
    v.sort();
    v
}

pub fn cla(any: &Any) -> ClusterLoadAssignment {
    ClusterLoadAssignment::decode(any.value.as_slice()).expect("cla")
}

pub fn endpoint_count(c: &ClusterLoadAssignment) -> usize {
    c.endpoints.iter().map(|l| l.lb_endpoints.len()).sum()
}

pub const A_HTTP: &str = "outbound|8080||a.svc";
pub const A_GRPC: &str = "outbound|9090||a.svc";
pub const B_HTTP: &str = "outbound|8080||b.svc";
pub const B_GRPC: &str = "outbound|9090||b.svc";

pub fn sorted<S: AsRef<str>>(v: &[S]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.as_ref().to_owned()).collect();
    v.sort();
    v
}

/// An in-process Sextant serving `services` (and `rules`, when given), and
/// a live Envoy configured by it alone; the outbound listener's address.
pub async fn sextant_and_envoy(
    services: Vec<Service>,
    node_id: &str,
    delta: bool,
    rules: Option<MemoryRules>,
) -> (Harness, sextant_testkit::peers::Envoy, SocketAddr) {
    let outbound = SocketAddr::from(([127, 0, 0, 1], sextant_testkit::peers::free_port()));
    let options = Options {
        translate: TranslateOptions {
            outbound_addr: outbound,
            ..Default::default()
        },
        rules,
        ..Default::default()
    };
    let h = start_with(MemoryRegistry::new("memory/test"), services, options).await;
    let bootstrap = sextant_xds::bootstrap::EnvoyBootstrap {
        node_id: node_id.into(),
        cluster: "test".into(),
        xds_addrs: vec![h.addr.to_string()],
        admin_addr: "127.0.0.1:0".into(),
        delta,
        ..Default::default()
    };
    let envoy = sextant_testkit::peers::Envoy::start(&bootstrap.to_yaml()).await;
    envoy.wait_live().await;
    (h, envoy, outbound)
}

/// A route rule written as a file's `routes:` entry.
pub fn route_rule(yaml: &str) -> sextant_core::Rule {
    serde_yaml_ng::from_str::<sextant_core::RouteEntry>(yaml)
        .unwrap_or_else(|e| panic!("{e}: {yaml}"))
        .into()
}

/// A destination policy written as a file's `policies:` entry.
pub fn policy_rule(yaml: &str) -> sextant_core::Rule {
    serde_yaml_ng::from_str::<sextant_core::PolicyEntry>(yaml)
        .unwrap_or_else(|e| panic!("{e}: {yaml}"))
        .into()
}

/// A gRPC server (`clients/echo_server.py`) answering with its name.
pub struct EchoServer {
    _child: tokio::process::Child,
    pub port: u16,
}

/// Starts `echo_server.py NAME ARGS...` and reads the port it chose.
pub async fn echo_server(name: &str, args: &[&str]) -> EchoServer {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(sextant_testkit::peers::python_path())
        .arg(sextant_testkit::peers::node_clients_dir().join("echo_server.py"))
        .arg(name)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start echo server");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("read port")
        .expect("a port line");
    EchoServer {
        _child: child,
        port: line.trim().parse().expect("port number"),
    }
}
