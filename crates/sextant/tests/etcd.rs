//! etcd end to end: an instance kept registered by `sextant etcd register`
//! receives traffic through a real Envoy configured by `sextant
//! --registries etcd`, and stops receiving it once the registering process
//! is killed and its lease expires. Real etcd, real Envoy, real processes.
#![allow(clippy::expect_used)]

mod common;

use std::process::Stdio;

use common::*;
use sextant_testkit::peers::{Envoy, Etcd, HttpBackend, http_get, status_change};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_instance_gets_traffic_until_its_lease_expires() {
    let etcd = Etcd::start().await;
    let backend = HttpBackend::start("registered").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sx = Sextant::start(
        dir.path(),
        &["--registries", "etcd", "--etcd-endpoints", &etcd.url],
    )
    .await;

    let port = format!("http={}", backend.addr.port());
    let mut register = Command::new(BIN)
        .args([
            "etcd",
            "register",
            "--hostname",
            "web.test.svc",
            "--address",
            "127.0.0.1",
            "--port",
            &port,
        ])
        .args(["--ttl", "2s", "--etcd-endpoints", &etcd.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start sextant etcd register");

    let envoy = Envoy::start(&bootstrap(sx.xds, "etcd-e2e", false).await).await;
    envoy.wait_live().await;
    let seen = bodies(sx.outbound, "web.test.svc", 200, |s| {
        s.contains("registered")
    })
    .await;
    assert!(
        seen.contains("registered"),
        "no traffic reached the registered instance:\n{}",
        sx.log()
    );
    let reg = sx.json("/debug/registryz").await;
    assert_eq!(reg["registries"][0]["id"], "etcd/main");
    assert_eq!(reg["registries"][0]["state"], "synced");

    // The process dies without deregistering: the lease expires, the endpoint goes.
    register.kill().await.expect("kill -9");
    let status = status_change(sx.outbound, "web.test.svc", 200).await;
    assert_eq!(status, 503, "after the lease expired: no healthy upstream");
    let hits = backend.hits();
    for _ in 0..10 {
        let _ = http_get(sx.outbound, "web.test.svc", "/").await;
    }
    assert_eq!(backend.hits(), hits, "no more traffic to the dead instance");
}

#[tokio::test]
async fn register_validates_its_arguments() {
    let out = Command::new(BIN)
        .args([
            "etcd",
            "register",
            "--hostname",
            "Web",
            "--address",
            "not an ip",
            "--port",
            "http",
        ])
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--address"), "{err}");
    assert!(err.contains("NAME=PORT"), "{err}");
}
