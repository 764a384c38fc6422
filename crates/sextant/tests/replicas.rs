//! Scale-out under faults: two replicas on one registry file, one Envoy
//! bootstrapped with both. Killing the replica Envoy is connected to moves
//! it to the other without a failed request and without resending anything
//! it holds (versions are content hashes); the killed replica coming back
//! does not pull Envoy back. Bounds only guard against hangs; the failover
//! time is measured and printed.
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sextant_testkit::peers::{Envoy, HttpBackend, free_port, http_get};

mod common;

use common::*;

/// The node's connections on a replica, from its /debug/syncz.
async fn connections(sx: &Sextant, node: &str) -> Vec<serde_json::Value> {
    sx.json("/debug/syncz").await["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["node_id"] == node)
        .collect()
}

async fn fail_over(delta: bool) {
    let (one, two) = (
        HttpBackend::start("one").await,
        HttpBackend::start("two").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, mesh(&[&one, &two])).expect("write");
    let outbound = SocketAddr::from(([127, 0, 0, 1], free_port())).to_string();
    let args = [
        "--file",
        file.to_str().expect("path"),
        "--outbound-addr",
        &outbound,
    ];
    let mut replicas = [
        Sextant::start(dir.path(), &args).await,
        Sextant::start(dir.path(), &args).await,
    ];
    let node = if delta {
        "replicas-delta"
    } else {
        "replicas-sotw"
    };
    let xds = [replicas[0].xds, replicas[1].xds];
    let envoy = Envoy::start(&bootstrap_for(&xds, node, delta).await).await;
    envoy.wait_live().await;
    let outbound = replicas[0].outbound;
    let seen = bodies(outbound, "web.test.svc", 100, |s| s.len() == 2).await;
    assert_eq!(seen.len(), 2, "{}", envoy.log());

    // Which replica is Envoy on, and is it settled there?
    let mut on = None;
    for _ in 0..200 {
        for (i, r) in replicas.iter().enumerate() {
            let conns = connections(r, node).await;
            if conns.len() == 1
                && conns[0]["types"]
                    .as_array()
                    .is_some_and(|ts| ts.len() == 4 && ts.iter().all(|t| t["in_flight"] == false))
            {
                on = Some(i);
            }
        }
        if on.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let victim = on.expect("Envoy settles on one replica");
    let survivor = 1 - victim;
    let updates_before = envoy.stat_sum("update_success").await;

    // Steady traffic throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = tokio::spawn({
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = matches!(http_get(outbound, "web.test.svc", "/").await, Ok((200, _)));
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    replicas[victim].kill().await;
    let killed = Instant::now();
    let mut moved = None;
    while killed.elapsed() < Duration::from_secs(30) {
        if connections(&replicas[survivor], node).await.len() == 1 {
            moved = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let moved =
        moved.unwrap_or_else(|| panic!("Envoy never reached the other replica:\n{}", envoy.log()));
    eprintln!("{node}: Envoy was on the other replica {moved:?} after kill -9");

    // The survivor sent no resource: Envoy already held exactly its
    // content, and said so (SotW: the version; delta: the versions of each
    // resource). A delta stream's first requests are still answered, empty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let conns = connections(&replicas[survivor], node).await;
    let types = conns[0]["types"].as_array().cloned().unwrap_or_default();
    assert!(!types.is_empty(), "{conns:?}");
    if !delta {
        for t in &types {
            assert_eq!(t["responses"], 0, "answered after failover: {t}");
        }
        assert_eq!(
            envoy.stat_sum("update_success").await,
            updates_before,
            "Envoy applied an update on failover"
        );
    }
    let (_, metrics) = replicas[survivor].get("/metrics").await;
    let per_type: Vec<u64> = metrics
        .lines()
        .filter(|l| l.starts_with("sextant_xds_resources_sent_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .collect();
    // One counter per resource type (clusters, endpoints, listeners,
    // routes, secrets).
    assert_eq!(per_type.len(), 5, "{metrics}");
    assert_eq!(
        per_type, [0; 5],
        "resources resent after failover:\n{metrics}"
    );

    // The killed replica comes back: Envoy stays where it is.
    replicas[victim].restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        connections(&replicas[victim], node).await.is_empty(),
        "Envoy flapped back"
    );
    assert_eq!(connections(&replicas[survivor], node).await.len(), 1);
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic");
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{node}: {sent} requests through the failover, {failed} failed");
    assert!(sent > 50, "too little traffic to tell: {sent}");
    assert_eq!(failed, 0, "requests failed during the failover");

    // Changes still arrive, through the survivor.
    std::fs::write(&file, mesh(&[&one])).expect("write");
    let gone = format!("{}::", two.addr);
    let mut arrived = false;
    for _ in 0..200 {
        let (_, clusters) = envoy.admin_get("/clusters").await;
        if !clusters.contains(&gone) {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(arrived, "a change after the failover never arrived");
    assert_eq!(envoy.stat_sum("update_rejected").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_fails_over_between_replicas_sotw() {
    fail_over(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_fails_over_between_replicas_delta() {
    fail_over(true).await;
}
