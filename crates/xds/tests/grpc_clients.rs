//! Proxyless gRPC clients (Python grpcio and Node grpc-js-xds, installed by
//! scripts/install-peers.sh) dialing `xds:///HOSTNAME:PORT` through Sextant,
//! against real gRPC servers. One client process lives through a registry
//! change, so updates are checked too.
#![allow(clippy::expect_used)]

mod common;

use std::process::Stdio;

use common::*;
use sextant_core::{Endpoint, Protocol, Service};
use sextant_testkit::peers::{node_clients_dir, python_path};
use sextant_xds::bootstrap::GrpcBootstrap;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const TARGET: &str = "xds:///echo.test.svc:50051";

fn echo_service(servers: &[&EchoServer]) -> Service {
    let mut s = Service::new("echo.test.svc").with_port("grpc", 50051, Protocol::Grpc);
    for (i, srv) in servers.iter().enumerate() {
        let mut ep = Endpoint::new("127.0.0.1".parse().expect("addr"))
            .with_port("grpc", u32::from(srv.port));
        ep.locality.zone = format!("zone-{}", i % 2);
        s = s.with_endpoint(ep);
    }
    s
}

struct Client {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: ChildStdin,
}

impl Client {
    /// Lets a `NAMES@TARGET` phase start.
    async fn go(&mut self) {
        self.stdin
            .write_all(b"go\n")
            .await
            .expect("write to client");
        self.stdin.flush().await.expect("flush");
    }

    async fn expect_phase(&mut self, phase: &str) {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("client answers within 60 s")
            .expect("read")
            .unwrap_or_default();
        assert_eq!(line, format!("ok {phase}"), "client output");
    }

    async fn finish(mut self) {
        let status = self.child.wait().await.expect("wait");
        assert!(status.success(), "client exited with {status}");
    }
}

async fn run_client(
    program: &str,
    args: &[String],
    bootstrap: &std::path::Path,
    phases: &[&str],
) -> Client {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(TARGET)
        .args(phases)
        .current_dir(node_clients_dir())
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stdin = child.stdin.take().expect("stdin");
    Client {
        child,
        lines,
        stdin,
    }
}

/// The program and arguments of the Node or the Python client.
fn client_program(node: bool) -> (String, Vec<String>) {
    let (program, script) = if node {
        ("node".to_owned(), "xds_client.js")
    } else {
        (python_path().display().to_string(), "xds_client.py")
    };
    let script = node_clients_dir().join(script).display().to_string();
    (program, vec![script])
}

/// A bootstrap file for `node_id` pointing at `h`, in `dir`.
fn write_bootstrap(dir: &std::path::Path, h: &Harness, node_id: &str) -> std::path::PathBuf {
    let path = dir.join("bootstrap.json");
    let json = GrpcBootstrap {
        node_id: node_id.into(),
        cluster: "test".into(),
        xds_addrs: vec![h.addr.to_string()],
        ..Default::default()
    }
    .to_json();
    std::fs::write(&path, json).expect("write bootstrap");
    path
}

async fn proxyless_client_follows_the_registry(node: bool) {
    let one = echo_server("one", &[]).await;
    let two = echo_server("two", &[]).await;
    let h = start(vec![echo_service(&[&one, &two])]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = write_bootstrap(dir.path(), &h, if node { "grpc-js" } else { "grpcio" });

    let (program, args) = client_program(node);
    let mut client = run_client(&program, &args, &bootstrap, &["one,two", "one"]).await;
    client.expect_phase("one,two").await;
    h.registry.insert(echo_service(&[&one]));
    client.expect_phase("one").await;
    client.finish().await;

    assert!(
        h.server.nacks().is_empty(),
        "client rejected config: {:?}",
        h.server.nacks()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_calls_through_xds() {
    proxyless_client_follows_the_registry(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_grpc_js_xds_calls_through_xds() {
    proxyless_client_follows_the_registry(true).await;
}

/// A client already talking to the control plane calls a service that did
/// not exist when it started, on a new channel: the new listener, route,
/// cluster and endpoints all arrive promptly (the bound, 5 s, only tells
/// "prompt" apart from a stall on a 15 s fetch timeout).
async fn a_new_service_is_called_promptly(node: bool) {
    let one = echo_server("one", &[]).await;
    let fresh = echo_server("fresh", &[]).await;
    let h = start(vec![echo_service(&[&one])]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = write_bootstrap(
        dir.path(),
        &h,
        if node { "grpc-js-new" } else { "grpcio-new" },
    );
    let (program, args) = client_program(node);
    let phase = "fresh@xds:///fresh.test.svc:50051";
    let mut client = run_client(&program, &args, &bootstrap, &["one", phase]).await;
    client.expect_phase("one").await;

    let mut added = Service::new("fresh.test.svc").with_port("grpc", 50051, Protocol::Grpc);
    added = added.with_endpoint(
        Endpoint::new("127.0.0.1".parse().expect("addr")).with_port("grpc", u32::from(fresh.port)),
    );
    h.registry.insert(added);
    let start = std::time::Instant::now();
    client.go().await;
    client.expect_phase(phase).await;
    let took = start.elapsed();
    eprintln!(
        "{}: a new service answered 12 calls in a row {took:?} after it was added",
        if node { "grpc-js" } else { "grpcio" }
    );
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    client.finish().await;
    assert!(h.server.nacks().is_empty(), "{:?}", h.server.nacks());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_calls_a_new_service_promptly() {
    a_new_service_is_called_promptly(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_grpc_js_xds_calls_a_new_service_promptly() {
    a_new_service_is_called_promptly(true).await;
}
