//! The `sextant` binary as a user runs it: a registry file, a real Envoy
//! started from `sextant bootstrap`, the admin endpoints, check-config and
//! SIGTERM. Loops poll with a bound that only guards against hangs.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use sextant_testkit::ads::{SotwClient, types};
use sextant_testkit::peers::{Envoy, HttpBackend, free_port, http_get};
use tokio::process::Command;

mod common;
mod entries;
mod exports;
mod gateway;

use common::*;

async fn laptop_walkthrough(delta: bool) {
    let (one, two, three) = (
        HttpBackend::start("one").await,
        HttpBackend::start("two").await,
        HttpBackend::start("three").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, mesh(&[&one, &two])).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let node = if delta { "laptop-delta" } else { "laptop-sotw" };
    let envoy = Envoy::start(&bootstrap(sx.xds, node, delta).await).await;
    envoy.wait_live().await;

    let seen = bodies(sx.outbound, "web.test.svc", 100, |s| s.len() == 2).await;
    assert_eq!(
        seen,
        BTreeSet::from(["one".into(), "two".into()]),
        "{}",
        sx.log()
    );

    // Edit the file: a third endpoint receives traffic.
    std::fs::write(&file, mesh(&[&one, &two, &three])).expect("write");
    let seen = bodies(sx.outbound, "web.test.svc", 200, |s| s.contains("three")).await;
    assert!(seen.contains("three"), "{}", sx.log());

    // Add a brand-new service to the file: it routes promptly, without
    // Envoy waiting out its 15 s initial fetch timeout for the new
    // cluster's endpoints (the bound, 5 s, only tells the two apart).
    let added = format!(
        "{}  - hostname: new.test.svc\n    ports: [{{ name: http, port: 8080 }}]\n    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {} }} }}]\n",
        mesh(&[&one, &two, &three]),
        three.addr.port()
    );
    std::fs::write(&file, added).expect("write");
    let written = std::time::Instant::now();
    let mut routed = false;
    while written.elapsed() < Duration::from_secs(5) && !routed {
        routed = matches!(http_get(sx.outbound, "new.test.svc", "/").await, Ok((200, b)) if b == "three");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "a service added to the file routed after {:?}",
        written.elapsed()
    );
    assert!(
        routed,
        "the new service did not route within 5 s: {}",
        sx.log()
    );
    assert_eq!(
        envoy.stat_sum("init_fetch_timeout").await,
        0,
        "{}",
        envoy.log()
    );

    // An invalid edit changes nothing for traffic and shows where it is.
    std::fs::write(&file, mesh(&[&one]).replace("port: 8080", "port: 0")).expect("write");
    let problem = sx.first_problem().await;
    assert!(
        problem.contains("mesh.yaml:2") && problem.contains("ports[0].port"),
        "{problem}"
    );
    let seen = bodies(sx.outbound, "web.test.svc", 60, |s| s.len() == 3).await;
    assert_eq!(seen.len(), 3, "traffic still reaches all three: {seen:?}");

    // Removing the service gives 404.
    std::fs::write(&file, "services: []\n").expect("write");
    let mut status = 0;
    for _ in 0..200 {
        status = http_get(sx.outbound, "web.test.svc", "/")
            .await
            .map(|r| r.0)
            .unwrap_or(0);
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 404);

    // /debug/syncz shows the Envoy, up to date on every type.
    let mut synced = false;
    for _ in 0..100 {
        let s = sx.json("/debug/syncz").await;
        let conns = s["connections"].as_array().cloned().unwrap_or_default();
        synced = conns.len() == 1
            && conns[0]["node_id"] == node
            && conns[0]["types"].as_array().is_some_and(|ts| {
                ts.len() == 4
                    && ts
                        .iter()
                        .all(|t| t["in_flight"] == false && t["acked_version"] == t["sent_version"])
            });
        if synced {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(synced, "{}", sx.json("/debug/syncz").await);
    assert_eq!(envoy.stat_sum("update_rejected").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laptop_walkthrough_sotw() {
    laptop_walkthrough(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laptop_walkthrough_delta() {
    laptop_walkthrough(true).await;
}

#[tokio::test]
async fn admin_endpoints_return_what_they_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, "services:\n  - hostname: a.test.svc\n    ports: [{ name: http, port: 80 }]\n    endpoints: [{ address: 10.1.2.3 }]\n").expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let config = sx.json("/debug/configz").await;
    assert_eq!(
        config["services"]["a.test.svc"]["endpoints"][0]["address"],
        "10.1.2.3"
    );
    assert_eq!(config["services"]["a.test.svc"]["origins"][0], "file/main");
    let reg = sx.json("/debug/registryz").await;
    assert_eq!(reg["registries"][0]["state"], "synced");
    assert_eq!(reg["registries"][0]["services"], 1);
    let (status, metrics) = sx.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "sextant_ready 1",
        "sextant_services 1",
        "sextant_endpoints 1",
        "sextant_registry_state{registry=\"file/main\",kind=\"services\",state=\"synced\"} 1",
        "sextant_xds_connections 0",
        "sextant_xds_push_latency_seconds_count 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    assert!(metrics.contains("# TYPE sextant_xds_nacks counter"));
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    // Valid OpenMetrics to the Prometheus project's own parser; every
    // family once, each counter's samples named `_total`.
    let families = openmetrics(&metrics).await;
    let mut seen = BTreeSet::new();
    for f in &families {
        let name = f["name"].as_str().expect("name");
        assert!(seen.insert(name.to_owned()), "{name} twice");
        if f["type"] == "counter" {
            for sample in f["samples"].as_array().expect("samples") {
                let sample = sample["name"].as_str().expect("sample");
                assert!(
                    sample == format!("{name}_total") || sample == format!("{name}_created"),
                    "{sample} in counter {name}"
                );
            }
        }
    }
    assert!(seen.len() >= 40, "{seen:?}");
    // The file registry is a service source and a rule source under one
    // id: every series must still be unique (Prometheus rejects duplicates).
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "sextant_registry_state{registry=\"file/main\",kind=\"rules\",state=\"synced\"} 1"
        )),
        "{metrics}"
    );
    let mut series = std::collections::BTreeSet::new();
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let key = line.rsplit_once(' ').map_or(line, |(k, _)| k);
        assert!(
            series.insert(key.to_owned()),
            "duplicate series {key:?} in\n{metrics}"
        );
    }
    let (status, index) = sx.get("/").await;
    assert_eq!(status, 200);
    assert!(index.contains("/debug/syncz"));
}

#[tokio::test]
async fn sigterm_closes_streams_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, "services: []\n").expect("write");
    let mut sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let mut client = SotwClient::connect(sx.xds, "draining").await;
    client.subscribe(types::CDS, &[]).await;
    let _ = client.recv().await;
    let pid = sx.child.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), sx.child.wait())
        .await
        .expect("exits within 10 s")
        .expect("wait");
    assert!(exit.success(), "exit status {exit}: {}", sx.log());
    assert!(sx.log().contains("all xDS streams closed"), "{}", sx.log());
    // The client saw its stream end rather than hang.
    let ended = tokio::time::timeout(Duration::from_secs(5), client.recv_result())
        .await
        .expect("stream ends");
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");
}

async fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .await
        .expect("run sextant");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn check_config_reports_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "services:\n  - hostname: a.svc\n    ports: [{ name: http, port: 80 }]\n",
    )
    .expect("write");
    let (ok, out, err) = run(&["check-config", "--file", good.to_str().expect("path")]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("ok:"), "{out}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "services:\n  - hostname: A.svc\n    ports: [{ name: http, port: 80 }]\n",
    )
    .expect("write");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "services: [ { hostname: b.svc\n").expect("write");
    let (ok, _, err) = run(&[
        "check-config",
        "--file",
        bad.to_str().expect("p"),
        "--file",
        broken.to_str().expect("p"),
    ])
    .await;
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "error: {}:2: service \"A.svc\", field hostname: must be lowercase",
            bad.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("error: {}:", broken.display())),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error: ")).count(),
        2,
        "{err}"
    );

    let (ok, _, err) = run(&[
        "--registries",
        "file,zookeeper",
        "--file",
        good.to_str().expect("p"),
    ])
    .await;
    assert!(!ok);
    assert!(
        err.contains("unknown registry kind \"zookeeper\"; known kinds: file, etcd, consul, k8s"),
        "{err}"
    );

    let (ok, _, err) = run(&[
        "--file",
        bad.to_str().expect("p"),
        "--admin-addr",
        "127.0.0.1:0",
        "--xds-addr",
        "127.0.0.1:0",
    ])
    .await;
    assert!(!ok, "refuses to start with an invalid registry file");
    assert!(err.contains("refusing to start"), "{err}");

    let (ok, out, _) = run(&["bootstrap", "--node-id", "n1", "--grpc"]).await;
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["node"]["id"], "n1");
}

/// The laptop example as shipped (examples/laptop/mesh.yaml, its ports
/// pointed at two test backends): its header route and 90/10 canary steer a
/// real Envoy; an edit of the rule takes effect; a broken rule keeps the
/// last good rules and says where; `check-config` passes the example and
/// warns about a rule that names a missing subset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_laptop_example_rules_steer_envoy() {
    let v1 = HttpBackend::start("v1").await;
    let v2 = HttpBackend::start("v2").await;
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/laptop/mesh.yaml"),
    )
    .expect("the example");
    let text = example
        .replace("19080", &v1.addr.port().to_string())
        .replace("19081", &v2.addr.port().to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, &text).expect("write");
    let path = file.to_str().expect("path");

    let (ok, out, err) = run(&["check-config", "--file", path]).await;
    assert!(
        ok && out.starts_with("ok:") && !out.contains("warning"),
        "{out}{err}"
    );

    let sx = Sextant::start(dir.path(), &["--file", path]).await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "laptop-rules", false).await).await;
    envoy.wait_live().await;
    let host = "web.local.svc";
    let alice = [("x-user", "alice")];
    assert_routes_to(&sx, host, &alice, "v2").await;
    let to_v2 = count_body(sx.outbound, host, &[], 400, "v2").await;
    eprintln!("laptop canary: {to_v2} of 400 requests to v2");
    assert!((20..=60).contains(&to_v2), "90/10 gave {to_v2}/400 to v2");

    // /debug/configz shows the rules and what they are bound to.
    let config = sx.json("/debug/configz").await;
    let rules = config["rules"].as_array().cloned().unwrap_or_default();
    assert_eq!(rules.len(), 2, "{config}");
    assert!(
        rules
            .iter()
            .all(|r| r["bound_to"] == serde_json::json!([host]))
    );
    let reg = sx.json("/debug/registryz").await;
    let source = reg["registries"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["kind"] == "rules").cloned())
        .expect("the file as a rule source");
    assert_eq!(
        (source["routes"].as_u64(), source["policies"].as_u64()),
        (Some(1), Some(1))
    );

    // The canary moves to 0/100: every request reaches v2.
    std::fs::write(
        &file,
        text.replace("weight: 90", "weight: 0")
            .replace("weight: 10", "weight: 100"),
    )
    .expect("write");
    let in_force = until_all(sx.outbound, host, "v2", Duration::from_secs(5)).await;
    eprintln!("laptop canary edit in force after {in_force:?}");
    assert!(in_force.is_some(), "{}", sx.log());

    // A broken rule: the last good rules keep serving; the problem has its line.
    std::fs::write(&file, text.replace("weight: 10", "weight: 20")).expect("write");
    let problem = sx.first_problem().await;
    assert!(
        problem.contains("mesh.yaml:") && problem.contains("weights sum to 110"),
        "{problem}"
    );
    for _ in 0..20 {
        let (_, body) = http_get(sx.outbound, host, "/").await.expect("request");
        assert_eq!(body, "v2", "the last good rule (0/100) still serves");
    }

    // check-config: an unknown subset is a warning, not an error.
    let odd = dir.path().join("odd.yaml");
    std::fs::write(&odd, text.replace("subset: v2 } }]", "subset: v3 } }]")).expect("write");
    let (ok, out, _) = run(&["check-config", "--file", odd.to_str().expect("path")]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: route default/web, field http[0].route[0].destination: subset \"v3\" is not defined"),
        "{out}"
    );
    assert_eq!(envoy.stat_sum("update_rejected").await, 0);
}

/// A TCP echo server on loopback; returns its port.
/// Sextant on the registry `file` with TCP listeners at port + `offset`,
/// and a live Envoy (node `node`) from its bootstrap.
async fn with_tcp_offset(
    dir: &std::path::Path,
    file: &std::path::Path,
    offset: u32,
    node: &str,
) -> (Sextant, Envoy) {
    let sx = Sextant::start(
        dir,
        &[
            "--file",
            file.to_str().expect("path"),
            "--tcp-port-offset",
            &offset.to_string(),
        ],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, node, false).await).await;
    envoy.wait_live().await;
    (sx, envoy)
}

async fn tcp_echo() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// Sends `text` through `addr` and reads it back (bounded wait).
async fn echoes(addr: std::net::SocketAddr, text: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        conn.write_all(text).await.ok()?;
        let mut back = vec![0u8; text.len()];
        conn.read_exact(&mut back).await.ok()?;
        Some(back == text)
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Explicit mode's TCP listeners: a TCP service port P is reachable at
/// P + --tcp-port-offset through Envoy, including a service added while
/// running; two services wanting one port: the first by name gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_services_get_listeners_at_their_port_plus_the_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (tcp_echo().await, tcp_echo().await);
    let offset = u32::from(free_port()) - 5432;
    let bind = |port: u32| {
        std::net::SocketAddr::from(([127, 0, 0, 1], u16::try_from(port + offset).expect("port")))
    };
    let file = dir.path().join("mesh.yaml");
    let db_only = format!(
        "services:\n  - hostname: db.test.svc\n    ports: [{{ name: db, port: 5432, protocol: TCP }}]\n    endpoints: [{{ address: 127.0.0.1, ports: {{ db: {db} }} }}]\n  - hostname: zz-other-db.test.svc\n    ports: [{{ name: db, port: 5432, protocol: TCP }}]\n    endpoints: [{{ address: 127.0.0.9 }}]\n"
    );
    std::fs::write(&file, &db_only).expect("write");
    let (sx, envoy) = with_tcp_offset(dir.path(), &file, offset, "tcp").await;
    let mut ok = false;
    for _ in 0..100 {
        if echoes(bind(5432), b"hello db").await {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "no echo through {}\n{}", bind(5432), sx.log());
    assert!(
        sx.log().contains("zz-other-db.test.svc:5432"),
        "the conflict is logged:\n{}",
        sx.log()
    );

    // A TCP service added while running gets its listener too.
    let with_cache = format!(
        "{db_only}  - hostname: cache.test.svc\n    ports: [{{ name: redis, port: 6379, protocol: TCP }}]\n    endpoints: [{{ address: 127.0.0.1, ports: {{ redis: {cache} }} }}]\n"
    );
    std::fs::write(&file, with_cache).expect("write");
    let started = std::time::Instant::now();
    let mut ok = false;
    while started.elapsed() < std::time::Duration::from_secs(10) {
        if echoes(bind(6379), b"hello cache").await {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    eprintln!("new TCP service reachable after {:?}", started.elapsed());
    assert!(ok, "no echo through {}\n{}", bind(6379), sx.log());
    assert!(echoes(bind(5432), b"still db").await);
    assert_eq!(envoy.stat_sum("update_rejected").await, 0);
}

/// A weighted TCP route (Istio's VirtualService `tcp`) in explicit mode:
/// the TCP listener of `db` sends 80% of connections to subset v1 and 20%
/// to v2 (each connection picks once: HTTP backends answer over the raw
/// TCP proxy), then, edited while running, all of them to v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_tcp_route_splits_connections_between_subsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (v1, v2) = (
        HttpBackend::start("v1").await,
        HttpBackend::start("v2").await,
    );
    let offset = u32::from(free_port()) - 5432;
    let listener =
        std::net::SocketAddr::from(([127, 0, 0, 1], u16::try_from(5432 + offset).expect("port")));
    let file = dir.path().join("mesh.yaml");
    let mesh = |weights: (u32, u32)| {
        format!(
            "services:
  - hostname: db.test.svc
    ports: [{{ name: tcp-db, port: 5432, protocol: TCP }}]
    endpoints:
      - {{ address: 127.0.0.1, ports: {{ tcp-db: {} }}, labels: {{ version: v1 }} }}
      - {{ address: 127.0.0.1, ports: {{ tcp-db: {} }}, labels: {{ version: v2 }} }}
policies:
  - name: db
    host: db.test.svc
    subsets: [{{ name: v1, labels: {{ version: v1 }} }}, {{ name: v2, labels: {{ version: v2 }} }}]
routes:
  - name: db-migration
    hosts: [db.test.svc]
    tcp:
      - match: [{{ port: 5432 }}]
        route:
          - {{ destination: {{ host: db.test.svc, subset: v1 }}, weight: {} }}
          - {{ destination: {{ host: db.test.svc, subset: v2 }}, weight: {} }}
",
            v1.addr.port(),
            v2.addr.port(),
            weights.0,
            weights.1
        )
    };
    std::fs::write(&file, mesh((80, 20))).expect("write");
    let (sx, envoy) = with_tcp_offset(dir.path(), &file, offset, "tcp-routes").await;
    let seen = bodies(listener, "db.test.svc", 200, |s| s.len() == 2).await;
    assert_eq!(seen.len(), 2, "both subsets answer: {seen:?}\n{}", sx.log());
    let counts = tally(listener, "db.test.svc", 400).await;
    let share = counts.get("v1").copied().unwrap_or(0) as f64 / 400.0;
    eprintln!("80/20 TCP route: {counts:?}");
    // 400 draws at p = 0.8: the share lies within 0.72..0.88 but for odds
    // of about one in a hundred thousand.
    assert!((0.72..=0.88).contains(&share), "{counts:?}");

    std::fs::write(&file, mesh((0, 100))).expect("write");
    let took = until_all(
        listener,
        "db.test.svc",
        "v2",
        std::time::Duration::from_secs(10),
    )
    .await;
    assert!(took.is_some(), "the edit did not take: {}", sx.log());
    let counts = tally(listener, "db.test.svc", 50).await;
    assert_eq!(counts.get("v2"), Some(&50), "{counts:?}");
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}
