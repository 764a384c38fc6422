//! Operating Sextant as its operators do, through the binary: the event
//! journal, `sextant status` and `wait`, CSDS read by an independent
//! client, `describe`, the admin page in a real browser, the dashboard
//! against /metrics, and push traces read by an OTLP receiver. A real
//! Envoy and raw clients that reject on purpose stand for the proxies.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use sextant_testkit::ads::{SotwClient, types};

mod common;

use common::*;

/// A registry file with one service and no endpoint.
const ONE_SERVICE: &str =
    "services:\n  - hostname: a.test.svc\n    ports: [{ name: http, port: 80 }]\n";

/// `/debug/events` tells what happened, in order: the registry's first
/// read, the first push, a proxy's NACK (once, though it rejects the same
/// way again), the push a file edit causes; `?since=` gives only what came
/// after a number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_journal_tells_what_happened_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    let one = "services:\n  - hostname: a.test.svc\n    ports: [{ name: http, port: 80 }]\n    endpoints: [{ address: 10.1.2.3 }]\n";
    std::fs::write(&file, one).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let kinds = |v: &serde_json::Value| -> Vec<String> {
        v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["kind"].as_str().unwrap_or(""),
                    e["subject"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let first = sx.json("/debug/events").await;
    // The file registry is a service source and a rule source: both read,
    // in either order, then the first push.
    let mut told = kinds(&first);
    told[..2].sort();
    assert_eq!(
        told,
        [
            "registry_synced file/main (rules)",
            "registry_synced file/main (services)",
            "push snapshot 1"
        ],
        "{first}"
    );
    assert!(
        first["events"][2]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("configuration: ")),
        "{first}"
    );

    // A client that rejects the clusters, twice the same way.
    let mut client = SotwClient::connect(sx.xds, "nacker").await;
    client.subscribe(types::CDS, &[]).await;
    let r = client.recv().await;
    client.nack(&r, &[], "", "no thanks").await;
    let mut last = serde_json::Value::Null;
    for _ in 0..50 {
        last = sx.json("/debug/events").await;
        if kinds(&last).iter().any(|k| k == "nack nacker") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nack = last["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "nack")
        .unwrap_or_else(|| panic!("no NACK in {last}"));
    assert!(
        nack["message"]
            .as_str()
            .is_some_and(|m| m.contains("no thanks") && m.starts_with("cds ")),
        "{nack}"
    );

    // A file edit: one more push, seen after the last number read.
    let seen = last["last"].as_u64().expect("last");
    std::fs::write(
        &file,
        format!("{one}  - hostname: b.test.svc\n    ports: [{{ name: http, port: 80 }}]\n"),
    )
    .expect("write");
    let mut after = serde_json::Value::Null;
    for _ in 0..50 {
        after = sx.json(&format!("/debug/events?since={seen}")).await;
        if !kinds(&after).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kinds(&after), ["push snapshot 2"], "{after}");
    assert!(
        after["events"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 connections")),
        "{after}"
    );
    // The client rejects the new clusters the same way: counted, but the
    // journal keeps the first of a run of equal rejections only.
    let r = client.recv().await;
    client.nack(&r, &[], "", "no thanks").await;
    let mut nacks = 0.0;
    for _ in 0..50 {
        let (_, metrics) = sx.get("/metrics").await;
        nacks = metrics
            .lines()
            .find_map(|l| l.strip_prefix("sextant_xds_nacks_total{type=\"cds\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if nacks >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(nacks, 2.0);
    let all = sx.json("/debug/events").await;
    assert_eq!(
        kinds(&all).iter().filter(|k| k.starts_with("nack")).count(),
        1,
        "{all}"
    );
}

/// `sextant status` and `sextant wait`, with a real Envoy on one replica
/// and a client that rejects what it gets on another: one table for both
/// replicas, the Envoy SYNCED on every type and CURRENT, the rejecting
/// client NACKED and BEHIND with its error; a service added to the file:
/// `wait` returns once the Envoy holds it, and names the client that does
/// not (exit 1) while it is connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_wait_answer_whether_every_proxy_holds_the_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    let one = "services:\n  - hostname: a.test.svc\n    ports: [{ name: http, port: 80 }]\n    endpoints: [{ address: 10.1.2.3 }]\n";
    std::fs::write(&file, one).expect("write");
    let path = file.to_str().expect("path");
    let (first, second) = (
        Sextant::start(dir.path(), &["--file", path]).await,
        Sextant::start(dir.path(), &["--file", path]).await,
    );
    let envoy =
        sextant_testkit::peers::Envoy::start(&bootstrap(first.xds, "envoy-status", false).await)
            .await;
    envoy.wait_live().await;
    let mut nacker = SotwClient::connect(second.xds, "nacker").await;
    nacker.subscribe(types::CDS, &[]).await;
    let r = nacker.recv().await;
    nacker.nack(&r, &[], "", "no thanks").await;

    let admins = format!("{},{}", first.admin, second.admin);
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(BIN)
            .args(&args)
            .output()
            .await
            .expect("run sextant");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let status = || run(vec!["status".into(), "--admin-addr".into(), admins.clone()]);
    // One proxy in detail (`sextant status NODE`).
    let detail_of = |node: &str| {
        run(vec![
            "status".into(),
            node.into(),
            "--admin-addr".into(),
            admins.clone(),
        ])
    };
    let row = |out: &str, node: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(node))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let mut out = String::new();
    for _ in 0..100 {
        let (code, o, e) = status().await;
        assert_eq!(code, 0, "{o}{e}");
        out = o;
        if row(&out, "envoy-status").last().map(String::as_str) == Some("CURRENT") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let envoy_row = row(&out, "envoy-status");
    assert_eq!(
        envoy_row,
        [
            "envoy-status",
            &first.admin.to_string(),
            "envoy",
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "CURRENT"
        ],
        "{out}"
    );
    let nacker_row = row(&out, "nacker");
    assert_eq!(nacker_row[1], second.admin.to_string(), "{out}");
    assert_eq!(nacker_row[3], "NACKED", "{out}");
    assert_eq!(
        nacker_row.last().map(String::as_str),
        Some("BEHIND"),
        "{out}"
    );
    assert!(
        out.contains("nacker (")
            && out.contains("rejected cds version")
            && out.contains("no thanks"),
        "{out}"
    );
    assert!(
        out.contains("1 of 2 proxies CURRENT on 2 replica(s)"),
        "{out}"
    );
    // One proxy in detail: the rejected response, its error, the resources
    // the proxy kept the old version of.
    let (code, detail, e) = detail_of("nacker").await;
    assert_eq!(code, 0, "{detail}{e}");
    assert!(
        detail.starts_with(&format!("nacker on {}: BEHIND", second.admin)),
        "{detail}"
    );
    assert!(
        detail.contains("rejected: no thanks")
            && detail.contains("resources it kept the old version of: outbound|80||a.test.svc"),
        "{detail}"
    );
    // And resource by resource, against the newest snapshot: it holds no
    // cluster (it rejected the only response), and the newest version of
    // the one it would get is the one it rejected.
    let line = |text: &str, name: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.contains(name) && !l.contains("kept the old version"))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let a = line(&detail, "outbound|80||a.test.svc");
    assert_eq!(a.first().map(String::as_str), Some("cds"), "{detail}");
    assert_eq!(a[2], "-", "held: nothing; {detail}");
    assert!(
        detail.contains("rejected (NACK): keeps the held version"),
        "{detail}"
    );
    assert!(detail.contains("resources differ"), "{detail}");
    // The Envoy holds everything at its newest version.
    let (code, envoy_detail, e) = detail_of("envoy-status").await;
    assert_eq!(code, 0, "{envoy_detail}{e}");
    assert!(
        envoy_detail.contains("holds the newest configuration: all "),
        "{envoy_detail}"
    );

    // A new service; wait for it on both replicas.
    std::fs::write(
        &file,
        format!("{one}  - hostname: b.test.svc\n    ports: [{{ name: http, port: 80 }}]\n    endpoints: [{{ address: 10.1.2.4 }}]\n"),
    )
    .expect("write");
    let wait = |timeout: &str| {
        run(vec![
            "wait".into(),
            "--admin-addr".into(),
            admins.clone(),
            "--for".into(),
            "service/b.test.svc".into(),
            "--timeout".into(),
            timeout.into(),
        ])
    };
    // The client that rejected the clusters holds nothing new: named.
    let (code, o, e) = wait("2s").await;
    assert_eq!(code, 1, "{o}{e}");
    assert!(e.contains(&format!("{}: nacker", second.admin)), "{e}");
    assert!(!e.contains("envoy-status"), "the Envoy holds it: {e}");
    // Why, resource by resource: the new cluster went to it and is not
    // acknowledged (the client reads nothing more).
    let (code, detail, e) = detail_of("nacker").await;
    assert_eq!(code, 0, "{detail}{e}");
    eprintln!("{detail}");
    let b = line(&detail, "outbound|80||b.test.svc");
    assert_eq!(b.get(2).map(String::as_str), Some("-"), "{detail}");
    assert!(
        b.join(" ").ends_with("sent, not acknowledged yet"),
        "{detail}"
    );
    // Gone, and the wait passes: the Envoy holds the new service.
    drop(nacker);
    let started = std::time::Instant::now();
    let (code, o, e) = wait("20s").await;
    assert_eq!(code, 0, "{o}{e}");
    assert!(o.contains("held by all 1 proxies on 2 replica(s)"), "{o}");
    eprintln!("wait returned after {:?}: {}", started.elapsed(), o.trim());
    let (_, clusters) = envoy.admin_get("/clusters").await;
    assert!(clusters.contains("outbound|80||b.test.svc"), "{clusters}");

    // Another service, waited for at once: when wait returns, the Envoy
    // has it (never before), and that is a push and an ACK away.
    std::fs::write(
        &file,
        format!(
            "{one}  - hostname: c.test.svc
    ports: [{{ name: http, port: 80 }}]
    endpoints: [{{ address: 10.1.2.5 }}]
"
        ),
    )
    .expect("write");
    let waited = std::time::Instant::now();
    // A new service: absent until read, so nothing passes early (no
    // settling time needed, and the figure is the real one).
    let (code, o, e) = run(vec![
        "wait".into(),
        "--admin-addr".into(),
        admins.clone(),
        "--for".into(),
        "service/c.test.svc".into(),
        "--settle".into(),
        "0s".into(),
    ])
    .await;
    let took = waited.elapsed();
    assert_eq!(code, 0, "{o}{e}");
    // The Envoy's ACKs of the changes are counted as convergence, per type
    // (a stream's first answers are not: they carry no change).
    let (_, metrics) = first.get("/metrics").await;
    let count = |family: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{family}_count{{type=\"cds\"}} ")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(count("sextant_xds_convergence_seconds") >= 1, "{metrics}");
    // And the same responses as sent after the change, the server's share.
    assert!(
        count("sextant_xds_change_to_send_seconds") >= 1,
        "{metrics}"
    );
    let (_, clusters) = envoy.admin_get("/clusters").await;
    assert!(
        clusters.contains("outbound|80||c.test.svc"),
        "wait returned before the Envoy held it: {clusters}"
    );
    eprintln!(
        "wait for a new service: {took:?} after the file was written: {}",
        o.trim()
    );

    // A route rule for it: waited for by name, in force in the Envoy after.
    std::fs::write(
        &file,
        format!("{one}  - hostname: c.test.svc\n    ports: [{{ name: http, port: 80 }}]\n    endpoints: [{{ address: 10.1.2.5 }}]\nroutes:\n  - name: c\n    hosts: [c.test.svc]\n    http:\n      - route: [{{ destination: {{ host: c.test.svc }} }}]\n        timeout: 7s\n"),
    )
    .expect("write");
    let (code, o, e) = run(vec![
        "wait".into(),
        "--admin-addr".into(),
        admins.clone(),
        "--for".into(),
        "rule/VirtualService/default/c".into(),
    ])
    .await;
    assert_eq!(code, 0, "{o}{e}");
    let (_, routes) = envoy
        .admin_get("/config_dump?resource=dynamic_route_configs")
        .await;
    assert!(
        routes.contains("\"timeout\": \"7s\""),
        "wait returned before the rule was in force: {routes}"
    );
    // A rule that binds nothing is not waited for in vain: named at once.
    let (code, _, e) = run(vec![
        "wait".into(),
        "--admin-addr".into(),
        admins.clone(),
        "--for".into(),
        "rule/route/default/none".into(),
        "--timeout".into(),
        "1s".into(),
    ])
    .await;
    assert_eq!(code, 1);
    assert!(e.contains("binds to no service"), "{e}");
}

/// CSDS on the xDS port, read by an independent client (grpcio with
/// Envoy's own protos): the real Envoy's clusters and listeners SYNCED and
/// ACKED at the versions Envoy's own config dump shows, the contents as
/// typed resources; a client that rejected its clusters ERROR and NACKED
/// with its error; the stream answers as the fetch does; a node matcher
/// narrows the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csds_tells_each_client_what_it_holds_as_envoy_itself_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sx, envoy, _nacker) =
        envoy_and_nacker(dir.path(), "csds-envoy", "nacker", "no thanks").await;

    let csds = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(sextant_testkit::peers::python_path())
            .arg(
                sextant_testkit::peers::workspace_root()
                    .join("crates/sextant/tests/clients/csds_client.py"),
            )
            .args(&args)
            .output()
            .await
            .expect("run csds_client.py");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        serde_json::from_str::<serde_json::Value>(text.trim())
            .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)))
    };
    let answer = csds(vec![sx.xds.to_string()]).await;
    assert_eq!(answer["fetch"], answer["stream"], "{answer}");
    let rows = |node: &str| -> Vec<Vec<String>> {
        answer["fetch"][node]
            .as_array()
            .unwrap_or_else(|| panic!("{node} missing: {answer}"))
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|c| c.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .collect()
    };
    let envoy_rows = rows("csds-envoy");
    let cluster = envoy_rows
        .iter()
        .find(|r| r[1] == "outbound|80||a.test.svc" && r[0].ends_with("Cluster"))
        .unwrap_or_else(|| panic!("no cluster row: {envoy_rows:?}"));
    assert_eq!(&cluster[3..5], ["SYNCED", "ACKED"], "{cluster:?}");
    assert_eq!(
        cluster[6],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    // The version Envoy itself reports for that cluster.
    let (_, dump) = envoy
        .admin_get("/config_dump?resource=dynamic_active_clusters")
        .await;
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("config dump");
    let envoys = dump["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .find(|c| c["cluster"]["name"] == "outbound|80||a.test.svc")
        .unwrap_or_else(|| panic!("{dump}"));
    assert_eq!(envoys["version_info"].as_str(), Some(cluster[2].as_str()));
    for kind in [
        "Cluster",
        "ClusterLoadAssignment",
        "Listener",
        "RouteConfiguration",
    ] {
        assert!(
            envoy_rows
                .iter()
                .any(|r| r[0].ends_with(kind) && r[3] == "SYNCED" && r[4] == "ACKED"),
            "no synced {kind}: {envoy_rows:?}"
        );
    }
    let nacker_rows = rows("nacker");
    assert!(!nacker_rows.is_empty(), "{answer}");
    for r in &nacker_rows {
        assert_eq!(&r[3..6], ["ERROR", "NACKED", "no thanks"], "{r:?}");
    }
    // `sextant proxy-config` draws its tables from the same answer; they
    // name what Envoy's own config dump holds.
    let proxy_config = |kind: &str| {
        let args = vec![
            "proxy-config".to_owned(),
            "csds-envoy".to_owned(),
            kind.to_owned(),
            "--xds-addr".to_owned(),
            sx.xds.to_string(),
        ];
        async move {
            let out = tokio::process::Command::new(BIN)
                .args(&args)
                .output()
                .await
                .expect("run sextant proxy-config");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let dump_of = |resource: &'static str| {
        let envoy = &envoy;
        async move {
            let (_, text) = envoy
                .admin_get(&format!("/config_dump?resource={resource}&include_eds"))
                .await;
            serde_json::from_str::<serde_json::Value>(&text).expect("config dump")
        }
    };
    let clusters = proxy_config("clusters").await;
    let dumped = dump_of("dynamic_active_clusters").await;
    for c in dumped["configs"].as_array().expect("configs") {
        let name = c["cluster"]["name"].as_str().expect("name");
        let row = clusters
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in\n{clusters}"));
        assert!(
            row.contains("EDS") && row.contains("ROUND_ROBIN") && row.ends_with("SYNCED"),
            "{row}"
        );
    }
    let endpoints = proxy_config("endpoints").await;
    assert!(
        endpoints
            .lines()
            .any(|l| l.starts_with("outbound|80||a.test.svc")
                && l.contains("10.1.2.3:80")
                && l.contains("HEALTHY")),
        "{endpoints}"
    );
    let eds = dump_of("dynamic_endpoint_configs").await;
    assert!(eds.to_string().contains("10.1.2.3"), "{eds}");
    let routes = proxy_config("routes").await;
    let rds = dump_of("dynamic_route_configs").await;
    for vh in rds["configs"][0]["route_config"]["virtual_hosts"]
        .as_array()
        .expect("virtual hosts")
    {
        let name = vh["name"].as_str().expect("name");
        assert!(
            routes
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "virtual host {name} not in\n{routes}"
        );
    }
    assert!(proxy_config("listeners").await.contains("outbound_http"));
    assert!(proxy_config("secrets").await.contains("SDS"));

    // A prefix matcher on the node id.
    let narrowed = csds(vec![sx.xds.to_string(), "csds-".into()]).await;
    let nodes: Vec<&String> = narrowed["fetch"]
        .as_object()
        .expect("nodes")
        .keys()
        .collect();
    assert_eq!(nodes, ["csds-envoy"], "{narrowed}");
}

/// CSDS is authorized like xDS: under `--xds-auth token` a caller without
/// a token is refused, and one with a token sees the clients of its own
/// namespace only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csds_under_authentication_shows_a_caller_its_own_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, ONE_SERVICE).expect("write");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "tok-shop shop web\ntok-bank bank teller\n").expect("write");
    let tls = format!("127.0.0.1:{}", sextant_testkit::peers::free_port());
    let ca = dir.path().join("ca");
    let sx = Sextant::start(
        dir.path(),
        &[
            "--file",
            file.to_str().expect("path"),
            "--xds-auth",
            "token",
            "--xds-token-file",
            tokens.to_str().expect("path"),
            "--xds-tls-addr",
            &tls,
            "--ca-dir",
            ca.to_str().expect("path"),
        ],
    )
    .await;
    let mut clients = Vec::new();
    for (node, token) in [("shop-proxy", "tok-shop"), ("bank-proxy", "tok-bank")] {
        let mut c = SotwClient::connect_with_token(sx.xds, node, token).await;
        c.subscribe(types::CDS, &[]).await;
        let r = c.recv().await;
        c.ack(&r, &[]).await;
        clients.push(c);
    }
    let csds = |token: Option<&str>| {
        let mut cmd = tokio::process::Command::new(sextant_testkit::peers::python_path());
        cmd.arg(
            sextant_testkit::peers::workspace_root()
                .join("crates/sextant/tests/clients/csds_client.py"),
        )
        .arg(sx.xds.to_string());
        if let Some(t) = token {
            cmd.env("CSDS_TOKEN", t);
        }
        async move {
            let out = cmd.output().await.expect("run csds_client.py");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            serde_json::from_str::<serde_json::Value>(text.trim())
                .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    };
    let refused = csds(None).await;
    assert_eq!(refused["code"], "UNAUTHENTICATED", "{refused}");
    let shop = csds(Some("tok-shop")).await;
    let nodes: Vec<&String> = shop["fetch"].as_object().expect("nodes").keys().collect();
    assert_eq!(nodes, ["shop-proxy"], "{shop}");

    // proxy-config over the TLS port (its certificate from Sextant's CA),
    // with a token: the shop's proxy for the shop's token, nothing for the
    // bank's.
    let proxy_config = |token: &str| {
        let token_file = dir.path().join(format!("{token}.token"));
        std::fs::write(&token_file, token).expect("write");
        let args: Vec<String> = vec![
            "proxy-config".into(),
            "shop-proxy".into(),
            "clusters".into(),
            "--xds-addr".into(),
            tls.clone(),
            "--xds-ca".into(),
            ca.join("root-cert.pem").display().to_string(),
            "--token-file".into(),
            token_file.display().to_string(),
        ];
        async move {
            let out = tokio::process::Command::new(BIN)
                .args(&args)
                .output()
                .await
                .expect("run sextant proxy-config");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (ok, out, err) = proxy_config("tok-shop").await;
    assert!(ok && out.contains("outbound|80||a.test.svc"), "{out}{err}");
    let (ok, _, err) = proxy_config("tok-bank").await;
    assert!(
        !ok && err.contains("no proxy \"shop-proxy\" is connected"),
        "{err}"
    );
}

/// The Grafana dashboard in deploy/ reads only what /metrics serves: every
/// metric an expression names is a family there (histograms by their
/// `_bucket` series), and every label it groups by is on that metric's
/// samples.
#[tokio::test]
async fn the_grafana_dashboard_uses_only_metrics_that_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, ONE_SERVICE).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let (_, metrics) = sx.get("/metrics").await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    // What is served, as the Prometheus project's parser reads it: sample
    // names (a counter's with `_total`, a histogram's `_bucket`) and the
    // label names each carries.
    let mut served: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for f in openmetrics(&metrics).await {
        // A family with no sample yet is served all the same.
        let name = f["name"].as_str().expect("name");
        let first = match f["type"].as_str().expect("type") {
            "counter" => format!("{name}_total"),
            "histogram" => format!("{name}_bucket"),
            _ => name.to_owned(),
        };
        served.entry(first).or_default();
        for sample in f["samples"].as_array().expect("samples") {
            let labels = served
                .entry(sample["name"].as_str().expect("name").to_owned())
                .or_default();
            labels.extend(
                sample["labels"]
                    .as_object()
                    .expect("labels")
                    .keys()
                    .cloned(),
            );
        }
    }
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|t| t.starts_with("sextant_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            let labels: Vec<&str> = expr
                .split("by (")
                .skip(1)
                .filter_map(|rest| rest.split(')').next())
                .flat_map(|l| l.split(',').map(str::trim))
                .collect();
            for name in names {
                let has = served
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} (in {expr:?}) is not served"));
                for label in &labels {
                    assert!(
                        has.contains(*label),
                        "{name} has no label {label} (in {expr:?})"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked}");
}

/// `sextant describe pod NS/NAME`: the pod's proxy (found by Istio's node
/// id form), what it says of itself, and the mesh policy its workload gets:
/// the peer authentication modes in force and where they come from, and
/// the authorization policies that select it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_pod_names_the_policies_its_workload_gets() {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(
        &file,
        "services:
  - hostname: web.shop.svc
    namespace: shop
    ports: [{ name: http, port: 80 }]
    endpoints: [{ address: 10.0.0.5, labels: { app: web } }]
peerAuthentications:
  - { name: default, namespace: istio-system, mtls: { mode: PERMISSIVE } }
  - name: web
    namespace: shop
    selector: { matchLabels: { app: web } }
    mtls: { mode: STRICT }
    portLevelMtls: { 9090: { mode: DISABLE } }
authorizationPolicies:
  - name: deny-bank
    namespace: shop
    selector: { matchLabels: { app: web } }
    action: DENY
    rules: [{ from: [{ source: { namespaces: [bank] } }] }]
",
    )
    .expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let node = Node {
        id: "sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local".into(),
        metadata: Some(Struct {
            fields: [
                ("NAMESPACE".to_owned(), string("shop")),
                ("INSTANCE_IPS".to_owned(), string("10.0.0.5")),
                (
                    "LABELS".to_owned(),
                    Value {
                        kind: Some(Kind::StructValue(Struct {
                            fields: [("app".to_owned(), string("web"))].into(),
                        })),
                    },
                ),
            ]
            .into(),
        }),
        ..Default::default()
    };
    let mut client = SotwClient::connect(sx.xds, "ignored").await.with_node(node);
    client.subscribe(types::CDS, &[]).await;
    let r = client.recv().await;
    client.ack(&r, &[]).await;
    let out = tokio::process::Command::new(BIN)
        .args(["describe", "pod", "shop/web-1", "--admin-addr"])
        .arg(sx.admin.to_string())
        .output()
        .await
        .expect("run sextant describe");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "Pod shop/web-1: 1 proxy connection(s)",
        "Proxy sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local",
        "Workload:      app=web; IPs 10.0.0.5",
        "Own services:  web.shop.svc",
        "Mutual TLS:    STRICT; port 9090 DISABLE (from istio-system/default, shop/web)",
        "Authorization: authorization_policy shop/deny-bank",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    // A changed PeerAuthentication, waited for by name: when wait returns,
    // describe shows the new mode.
    let before = sx
        .json("/debug/syncz?rule=peer_authentication/shop/web")
        .await["host"]["changed_in"]
        .as_u64()
        .expect("the rule is known");
    let yaml = std::fs::read_to_string(&file).expect("read");
    std::fs::write(
        &file,
        yaml.replace("mtls: { mode: STRICT }", "mtls: { mode: PERMISSIVE }"),
    )
    .expect("write");
    // Sextant has read the edit (the wait's --settle covers this for a
    // caller; the test makes it certain).
    for _ in 0..100 {
        let now = sx
            .json("/debug/syncz?rule=peer_authentication/shop/web")
            .await["host"]["changed_in"]
            .as_u64()
            .unwrap_or(0);
        if now > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = tokio::process::Command::new(BIN)
        .args([
            "wait",
            "--for",
            "rule/PeerAuthentication/shop/web",
            "--admin-addr",
        ])
        .arg(sx.admin.to_string())
        .output()
        .await
        .expect("run sextant wait");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new(BIN)
        .args(["describe", "pod", "shop/web-1", "--admin-addr"])
        .arg(sx.admin.to_string())
        .output()
        .await
        .expect("run sextant describe");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("Mutual TLS:    PERMISSIVE; port 9090 DISABLE"),
        "{text}"
    );
    // A pod with no proxy is named as such.
    let out = tokio::process::Command::new(BIN)
        .args(["describe", "pod", "shop/nobody", "--admin-addr"])
        .arg(sx.admin.to_string())
        .output()
        .await
        .expect("run sextant describe");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no proxy of pod shop/nobody"));
}

/// The admin page, as a person sees it in a real browser (headless
/// Chromium): it loads without console errors and shows the connected
/// Envoy CURRENT and the client that rejected its clusters NACKED, with
/// the registry synced; a screenshot is kept in target/test-artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_proxies_and_nacks_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sx, _envoy, _nacker) =
        envoy_and_nacker(dir.path(), "page-envoy", "page-nacker", "<b>not</b> today").await;
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("mkdir");
    let screenshot = artifacts.join("admin-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = format!("http://{}/", sx.admin);
    let browser = |args: Vec<String>| {
        let profile = dir.path().join(format!("chromium-{}", args.len()));
        async move { sextant_testkit::peers::chromium(&profile, &args).await }
    };
    let dom = browser(vec![
        "--enable-logging=stderr".into(),
        "--v=0".into(),
        "--dump-dom".into(),
        url.clone(),
    ])
    .await;
    let page = String::from_utf8_lossy(&dom.stdout).into_owned();
    let log = String::from_utf8_lossy(&dom.stderr).into_owned();
    assert!(
        !log.lines()
            .any(|l| l.contains("CONSOLE") && l.contains("rror")),
        "console errors:\n{log}"
    );
    // The rows as the browser parsed them.
    let row = |node: &str| -> String {
        page.split("<tr>")
            .find(|r| r.contains(&format!("<td>{node}</td>")))
            .unwrap_or_else(|| panic!("no row for {node}:\n{page}"))
            .to_owned()
    };
    let envoy_row = row("page-envoy");
    assert!(
        envoy_row.contains("<td class=\"ok\">CURRENT</td>")
            && envoy_row.matches(">SYNCED<").count() == 4,
        "{envoy_row}"
    );
    let nacker_row = row("page-nacker");
    assert!(
        nacker_row.contains("<td class=\"bad\">NACKED</td>") && nacker_row.contains(">BEHIND<"),
        "{nacker_row}"
    );
    // The client's error is shown as text, not markup.
    assert!(page.contains("&lt;b&gt;not&lt;/b&gt; today"), "{page}");
    assert!(row("file/main").contains(">synced<"), "{page}");

    let shot = browser(vec![
        format!("--screenshot={}", screenshot.display()),
        "--window-size=1280,900".into(),
        url,
    ])
    .await;
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
}

/// Sextant on a one-service file in `dir`, a real Envoy (`envoy_node`) that
/// took its configuration, and a raw client (`nacker_node`) that rejected
/// its clusters with `error`; returned once the admin view shows the Envoy
/// CURRENT and the client NACKED (bounded, 10 s).
async fn envoy_and_nacker(
    dir: &std::path::Path,
    envoy_node: &str,
    nacker_node: &str,
    error: &str,
) -> (Sextant, sextant_testkit::peers::Envoy, SotwClient) {
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, "services:\n  - hostname: a.test.svc\n    ports: [{ name: http, port: 80 }]\n    endpoints: [{ address: 10.1.2.3 }]\n").expect("write");
    let sx = Sextant::start(dir, &["--file", file.to_str().expect("path")]).await;
    let envoy =
        sextant_testkit::peers::Envoy::start(&bootstrap(sx.xds, envoy_node, false).await).await;
    envoy.wait_live().await;
    let mut nacker = SotwClient::connect(sx.xds, nacker_node).await;
    nacker.subscribe(types::CDS, &[]).await;
    let r = nacker.recv().await;
    nacker.nack(&r, &[], "", error).await;
    for _ in 0..100 {
        let s = sx.json("/debug/syncz").await;
        let conns = s["connections"].as_array().cloned().unwrap_or_default();
        let of = |n: &str| conns.iter().find(|c| c["node_id"] == n).cloned();
        if of(envoy_node).is_some_and(|c| c["sync"] == "CURRENT")
            && of(nacker_node).is_some_and(|c| c["types"][0]["state"] == "NACKED")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (sx, envoy, nacker)
}

/// A span as the OTLP receiver printed it.
fn span_of(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str(line).ok()
}

/// A metric's value on `/metrics` (the first sample line starting with
/// `series`), 0 when absent.
async fn metric(sx: &Sextant, series: &str) -> f64 {
    let (_, text) = sx.get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Push traces over OTLP, read by a receiver built on the OpenTelemetry
/// project's own protos (grpcio): a service added to the file gives one
/// trace, `push` with `coalesce`, `translate` and `deliver` under it, in
/// that order in time, the deliver span with its first and last
/// connection, the push naming its trigger, what changed and the
/// connection it reached; the spans are counted as exported. With the
/// receiver gone, the next push's spans are counted as failed and the
/// Envoy still gets the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_push_is_traced_over_otlp_from_the_change_to_the_last_connection() {
    use tokio::io::AsyncBufReadExt as _;
    let mut receiver = tokio::process::Command::new(sextant_testkit::peers::python_path())
        .arg(
            sextant_testkit::peers::workspace_root()
                .join("crates/sextant/tests/clients/otlp_receiver.py"),
        )
        // The OpenTelemetry protos in their own directory, ahead of the
        // older copy xds-protos ships (scripts/install-peers.sh).
        .env(
            "SEXTANT_OTLP_PROTO",
            sextant_testkit::peers::workspace_root().join(".venv/otlp-proto"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start otlp_receiver.py");
    let mut spans = tokio::io::BufReader::new(receiver.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), spans.next_line())
        .await
        .expect("the receiver starts")
        .expect("read")
        .expect("a line");
    let port = first
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("{first}"));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    let one = "services:\n  - hostname: a.test.svc\n    ports: [{ name: http, port: 80 }]\n    endpoints: [{ address: 10.1.2.3 }]\n";
    std::fs::write(&file, one).expect("write");
    let endpoint = format!("http://127.0.0.1:{port}");
    let sx = Sextant::start(
        dir.path(),
        &[
            "--file",
            file.to_str().expect("path"),
            "--otlp-endpoint",
            &endpoint,
        ],
    )
    .await;
    let envoy =
        sextant_testkit::peers::Envoy::start(&bootstrap(sx.xds, "envoy-traced", false).await).await;
    envoy.wait_live().await;

    std::fs::write(
        &file,
        format!("{one}  - hostname: b.test.svc\n    ports: [{{ name: http, port: 80 }}]\n    endpoints: [{{ address: 10.1.2.4 }}]\n"),
    )
    .expect("write");
    // Spans arrive as they end, children first; the push that added the
    // cluster, once delivered to the Envoy.
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let push = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = tokio::time::timeout(left, spans.next_line())
            .await
            .unwrap_or_else(|_| panic!("no trace of the push; spans seen: {seen:#?}"))
            .expect("read")
            .expect("the receiver ended");
        let Some(span) = span_of(&line) else {
            continue;
        };
        seen.push(span.clone());
        // The first push (generation 1, before the Envoy came) is traced
        // too; the edit's is a later one.
        let a = &span["attributes"];
        if span["name"] == "push"
            && a["sextant.generation"].as_i64() > Some(1)
            && a["sextant.changed.cds"].as_i64() == Some(1)
        {
            break span;
        }
    };
    assert_eq!(push["service"], "sextant", "{push}");
    assert_eq!(push["parent_span_id"], "", "a root: {push}");
    let attr = &push["attributes"];
    assert_eq!(attr["sextant.trigger"], "configuration", "{push}");
    assert_eq!(attr["sextant.outcome"], "delivered", "{push}");
    assert_eq!(attr["sextant.connections"], 1, "the Envoy: {push}");
    let child = |name: &str| -> serde_json::Value {
        seen.iter()
            .find(|s| s["name"] == name && s["parent_span_id"] == push["span_id"])
            .cloned()
            .unwrap_or_else(|| panic!("no {name} under the push: {seen:#?}"))
    };
    let (coalesce, translate, deliver) = (child("coalesce"), child("translate"), child("deliver"));
    let t = |s: &serde_json::Value, k: &str| s[k].as_u64().expect("a time");
    for s in [&coalesce, &translate, &deliver] {
        assert_eq!(s["trace_id"], push["trace_id"], "{s}");
    }
    // In time: the first change, coalescing, translation, delivery, and the
    // push ends with its last connection.
    assert_eq!(t(&coalesce, "start"), t(&push, "start"));
    assert!(
        t(&coalesce, "end") <= t(&translate, "start"),
        "{coalesce} {translate}"
    );
    assert!(
        t(&translate, "end") <= t(&deliver, "start"),
        "{translate} {deliver}"
    );
    assert_eq!(t(&deliver, "end"), t(&push, "end"));
    let events: Vec<&str> = deliver["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e[0].as_str())
        .collect();
    assert_eq!(events, ["first connection", "last connection"], "{deliver}");
    let ms = |s: &serde_json::Value| (t(s, "end") - t(s, "start")) as f64 / 1e6;
    eprintln!(
        "the push of a new service, traced: coalesce {:.1} ms, translate {:.2} ms, deliver {:.1} ms; in all {:.1} ms",
        ms(&coalesce),
        ms(&translate),
        ms(&deliver),
        ms(&push)
    );
    let exported = "sextant_push_trace_spans_total{outcome=\"exported\"}";
    assert!(metric(&sx, exported).await >= 4.0, "{exported}");

    // The collector goes away: the next push is traced, its spans fail to
    // export and are counted; nothing else notices.
    drop(receiver.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), receiver.wait()).await;
    std::fs::write(
        &file,
        format!("{one}  - hostname: c.test.svc\n    ports: [{{ name: http, port: 80 }}]\n    endpoints: [{{ address: 10.1.2.5 }}]\n"),
    )
    .expect("write");
    let failed = "sextant_push_trace_spans_total{outcome=\"failed\"}";
    let mut ok = false;
    for _ in 0..200 {
        let (_, clusters) = envoy.admin_get("/clusters").await;
        if metric(&sx, failed).await >= 1.0 && clusters.contains("outbound|80||c.test.svc") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "{}", sx.get("/metrics").await.1);
}
