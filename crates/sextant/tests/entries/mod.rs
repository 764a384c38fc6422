//! ServiceEntries and WorkloadEntries from a registry file, served to a
//! real Envoy: a STATIC entry balanced over two backends, a DNS entry whose
//! answer changes while traffic runs (Sextant asks a DNS server the test
//! runs and counts), a WorkloadEntry selected, removed and added back, and
//! names left to Envoy with `--dns-resolution proxy`.
//!
//! A module of the `binary` test (one test binary less to link).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sextant_testkit::dns::CountingDns;
use sextant_testkit::peers::{Envoy, HttpBackend, http_get};

use super::common::*;

/// The registry file: three entries and the VM's WorkloadEntry (when
/// `vm` names a backend port).
fn entries(dns_port: u16, one: u16, two: u16, vm: Option<u16>) -> String {
    let mut s = format!(
        "\
serviceEntries:
  - name: partner-api
    namespace: shop
    hosts: [api.partner.test]
    location: MESH_EXTERNAL
    resolution: DNS
    ports: [{{ number: 8080, name: http, protocol: HTTP, targetPort: {dns_port} }}]
  - name: legacy
    namespace: shop
    hosts: [legacy.shop.test]
    resolution: STATIC
    ports: [{{ number: 8080, name: http }}]
    endpoints:
      - {{ address: 127.0.0.1, ports: {{ http: {one} }} }}
      - {{ address: 127.0.0.1, ports: {{ http: {two} }} }}
  - name: cart-vms
    namespace: shop
    hosts: [cart.shop.test]
    location: MESH_INTERNAL
    resolution: STATIC
    ports: [{{ number: 8080, name: http }}]
    workloadSelector: {{ labels: {{ app: cart }} }}
"
    );
    if let Some(port) = vm {
        s.push_str(&format!(
            "workloadEntries:\n  - {{ name: cart-vm-1, namespace: shop, address: 127.0.0.1, labels: {{ app: cart }}, ports: {{ http: {port} }} }}\n"
        ));
    }
    s
}

/// Polls `host` until it answers `want` ten times in a row (10 s bound).
async fn routes_to(sx: &Sextant, host: &str, want: &str) {
    assert_routes_to(sx, host, &[], want).await;
}

/// Status codes and bodies of `host` until `want` answers 10 times in a
/// row, with how long that took; every answer on the way is recorded.
async fn follow(outbound: SocketAddr, host: &str, want: &str) -> (Duration, Vec<(u16, String)>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut in_a_row = 0;
    while in_a_row < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{host} never settled on {want}: {seen:?}"
        );
        let r = http_get(outbound, host, "/")
            .await
            .unwrap_or((0, String::new()));
        in_a_row = if r.1 == want { in_a_row + 1 } else { 0 };
        seen.push(r);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (start.elapsed(), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_from_a_file_reach_envoy_and_dns_answers_are_followed() {
    // Two instances of the partner's API on two addresses, one port.
    let a = HttpBackend::start_at("partner-a", "127.0.0.2:0".parse().expect("addr")).await;
    let port = a.addr.port();
    let _b = HttpBackend::start_at("partner-b", SocketAddr::from(([127, 0, 0, 3], port))).await;
    let (one, two, vm) = (
        HttpBackend::start("one").await,
        HttpBackend::start("two").await,
        HttpBackend::start("vm").await,
    );
    let dns = CountingDns::start().await;
    dns.set("api.partner.test", &["127.0.0.2".parse().expect("ip")], 1);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("entries.yaml");
    let text = |vm_port| entries(port, one.addr.port(), two.addr.port(), vm_port);
    std::fs::write(&file, text(Some(vm.addr.port()))).expect("write");
    let sx = Sextant::start(
        dir.path(),
        &[
            "--file",
            file.to_str().expect("path"),
            "--dns-server",
            &dns.addr().to_string(),
        ],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "entries", false).await).await;
    envoy.wait_live().await;

    // STATIC: both endpoints take traffic.
    let seen = bodies(sx.outbound, "legacy.shop.test", 100, |s| s.len() == 2).await;
    assert_eq!(
        seen,
        BTreeSet::from(["one".into(), "two".into()]),
        "{}",
        sx.log()
    );

    // DNS: Sextant resolved the name; Envoy reaches the address.
    routes_to(&sx, "api.partner.test", "partner-a").await;
    let dnsz = sx.json("/debug/dnsz").await;
    assert_eq!(dnsz["names"][0]["name"], "api.partner.test", "{dnsz}");
    assert_eq!(dnsz["names"][0]["addresses"][0], "127.0.0.2", "{dnsz}");

    // The answer changes while requests run: every request succeeds, and
    // the new address takes over within the TTL and a push.
    dns.set("api.partner.test", &["127.0.0.3".parse().expect("ip")], 1);
    let (took, seen) = follow(sx.outbound, "api.partner.test", "partner-b").await;
    let failed: Vec<&(u16, String)> = seen.iter().filter(|(status, _)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "requests failed during the change: {failed:?}"
    );
    eprintln!(
        "the new DNS answer took over after {took:?} ({} requests, none failed)",
        seen.len()
    );

    // One name, asked about once per TTL, however many requests Envoy
    // made (Envoy itself never asks: the cluster is EDS).
    let before = dns.queries("api.partner.test");
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let _ = http_get(sx.outbound, "api.partner.test", "/").await;
        requests += 1;
    }
    let asked = dns.queries("api.partner.test") - before;
    eprintln!("{asked} DNS queries in 3 s at a TTL of 1 s, {requests} requests");
    assert!((2..=5).contains(&asked), "{asked} queries in 3 s");
    assert!(
        sx.get("/metrics")
            .await
            .1
            .contains("sextant_dns_queries_total{outcome=\"answered\"}"),
        "the counter is on /metrics"
    );

    // A WorkloadEntry selected by the entry: removed, traffic has nowhere
    // to go; added back, it returns.
    routes_to(&sx, "cart.shop.test", "vm").await;
    std::fs::write(&file, text(None)).expect("write");
    let mut status = 0;
    for _ in 0..200 {
        status = http_get(sx.outbound, "cart.shop.test", "/")
            .await
            .map_or(0, |r| r.0);
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, 503, "no endpoint left: {}", sx.log());
    std::fs::write(&file, text(Some(vm.addr.port()))).expect("write");
    routes_to(&sx, "cart.shop.test", "vm").await;
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proxy_resolution_envoy_resolves_the_name_itself() {
    let backend = HttpBackend::start("local").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("entries.yaml");
    std::fs::write(
        &file,
        format!(
            "serviceEntries:\n  - name: by-name\n    hosts: [named.test]\n    resolution: DNS\n    ports: [{{ number: 8080, name: http }}]\n    endpoints: [{{ address: localhost, ports: {{ http: {} }} }}]\n",
            backend.addr.port()
        ),
    )
    .expect("write");
    let sx = Sextant::start(
        dir.path(),
        &[
            "--file",
            file.to_str().expect("path"),
            "--dns-resolution",
            "proxy",
        ],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "proxy-dns", false).await).await;
    envoy.wait_live().await;
    routes_to(&sx, "named.test", "local").await;
    // Sextant followed no name.
    let (status, _) = sx.get("/debug/dnsz").await;
    assert_eq!(status, 404, "no resolver when the proxies resolve");
    let config = sx.json("/debug/configz").await.to_string();
    assert!(
        config.contains("\"localhost\""),
        "the name is served as is: {config}"
    );
}
