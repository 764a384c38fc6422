//! What a careless or hostile client or file can cost the `sextant` binary:
//! never the service of everyone else. Each test plays the client or file
//! against the real binary; loops poll with bounds that only guard against
//! hangs, and the few bounds on answers are far from what they guard
//! against (stated at each).
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use sextant_testkit::ads::{SotwClient, types};
use sextant_testkit::peers::http_get;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

mod common;

use common::*;

const SMALL: &str = "services:\n  - hostname: web.test.svc\n    ports: [{ name: http, port: 8080 }]\n    endpoints: [{ address: 10.0.0.1 }]\n";

/// A sample of the binary's /metrics.
async fn metric(sx: &Sextant, name: &str) -> u64 {
    let (_, body) = sx.get("/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

/// Polls until `done` holds for the metric (bounded).
async fn metric_until(sx: &Sextant, name: &str, done: impl Fn(u64) -> bool) -> u64 {
    let mut last = 0;
    for _ in 0..200 {
        last = metric(sx, name).await;
        if done(last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

/// True once the server closed `conn` (EOF or reset), waiting at most `wait`.
async fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(wait, conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            // The server's HTTP/2 settings: keep reading.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn silent_connections(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    silent_connections_from([127, 0, 0, 1], addr, n).await
}

/// `n` connections to `addr` from the loopback address `from` (Linux
/// answers all of 127.0.0.0/8 on the loopback device).
async fn silent_connections_from(
    from: [u8; 4],
    addr: std::net::SocketAddr,
    n: usize,
) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::from((from, 0)))
            .expect("bind a loopback source address");
        conns.push(socket.connect(addr).await.expect("connect"));
    }
    conns
}

/// A fresh ADS client's first CDS answer: how long it took.
async fn cds_round_trip(sx: &Sextant, node: &str) -> Duration {
    let start = Instant::now();
    let mut c = SotwClient::connect(sx.xds, node).await;
    c.subscribe(types::CDS, &[]).await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS);
    start.elapsed()
}

/// A registry file that takes seconds to parse (here about 13 MB, failing
/// only at its last line, so nothing is published after it) is read on a
/// blocking thread: meanwhile new proxies get their clusters and the admin
/// port answers. The bound, 1 s per answer, is well below the several
/// seconds the parse takes in this (debug) build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_being_parsed_holds_up_neither_proxies_nor_admin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SMALL).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    cds_round_trip(&sx, "warm-up").await;

    let mut big = String::from(SMALL);
    for i in 0..2000 {
        big.push_str(&format!(
            "  - hostname: s{i}.big.svc\n    ports: [{{ name: http, port: 80 }}]\n    endpoints:\n"
        ));
        for j in 0..100 {
            big.push_str(&format!(
                "      - {{ address: 10.{}.{j}.{}, labels: {{ version: v1, zone: z{} }} }}\n",
                i % 250,
                i / 250,
                j % 3
            ));
        }
    }
    big.push_str("  - hostname: [unclosed\n");
    let written = Instant::now();
    std::fs::write(&file, &big).expect("write");
    // The file registry reads after its 100 ms debounce.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut worst_cds, mut worst_ready) = (Duration::ZERO, Duration::ZERO);
    let mut n = 0;
    while written.elapsed() < Duration::from_millis(1800) {
        worst_cds = worst_cds.max(cds_round_trip(&sx, &format!("probe-{n}")).await);
        let start = Instant::now();
        let (status, _) = sx.get("/healthz/ready").await;
        assert_eq!(status, 200);
        worst_ready = worst_ready.max(start.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The parse must still have been running: its error is not shown yet.
    let registryz = sx.json("/debug/registryz").await;
    let parsing = registryz["registries"][0]["problems"]
        .as_array()
        .is_none_or(|p| p.is_empty());
    eprintln!(
        "{n} probes while parsing (still parsing at the end: {parsing}): slowest CDS {worst_cds:?}, slowest /healthz/ready {worst_ready:?}"
    );
    assert!(
        parsing,
        "the parse ended within the probing window: {registryz}"
    );
    assert!(worst_cds < Duration::from_secs(1), "{worst_cds:?}");
    assert!(worst_ready < Duration::from_secs(1), "{worst_ready:?}");

    // Then the error is shown, and the last good content still served. The
    // bound guards against a hang only: on a loaded 2-core machine the
    // debug-build parse has taken over 10 s.
    let mut problem = String::new();
    for _ in 0..2400 {
        let r = sx.json("/debug/registryz").await;
        if let Some(p) = r["registries"][0]["problems"][0]["message"].as_str() {
            problem = p.to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(problem.contains("mesh.yaml:"), "{problem}");
    let config = sx.json("/debug/configz").await;
    assert!(config["services"]["web.test.svc"].is_object(), "{config}");
}

/// Connections that never speak are closed after the handshake timeout;
/// past the maximum, new ones are refused at once; the admin port works
/// throughout, and a real proxy gets in once the silent ones are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_the_excess_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SMALL).expect("write");
    let sx = Sextant::start(
        dir.path(),
        &[
            "--file",
            file.to_str().expect("path"),
            "--xds-max-connections",
            "20",
            "--xds-max-connections-per-client",
            "20",
            "--xds-handshake-timeout",
            "2s",
        ],
    )
    .await;
    let mut held = silent_connections(sx.xds, 20).await;
    assert_eq!(
        metric_until(&sx, "sextant_xds_tcp_connections", |n| n == 20).await,
        20
    );
    let mut excess = silent_connections(sx.xds, 10).await;
    for c in &mut excess {
        assert!(
            closed_within(c, Duration::from_secs(1)).await,
            "an excess connection was kept"
        );
    }
    assert_eq!(
        metric(&sx, "sextant_xds_connections_refused_total").await,
        10
    );
    let (status, _) = sx.get("/healthz/ready").await;
    assert_eq!(status, 200, "admin works while xDS is full");

    // The silent ones are closed by the handshake timeout (2 s).
    for c in &mut held {
        assert!(
            closed_within(c, Duration::from_secs(10)).await,
            "a silent connection was kept past the handshake timeout"
        );
    }
    assert_eq!(
        metric(&sx, "sextant_xds_handshake_timeouts_total").await,
        20
    );
    cds_round_trip(&sx, "after-the-flood").await;
    assert!(sx.log().contains("xDS connection refused"), "{}", sx.log());
}

/// HTTP/2 advertises at most 16 concurrent streams per connection: a client
/// that opens 40 ADS streams on one connection gets 16 served at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SMALL).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let client = sextant_testkit::ads::connect(sx.xds).await;
    let mut opening = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        opening.push(tokio::spawn(async move {
            let mut c = SotwClient::open(client, &format!("stream-{i}")).await;
            c.subscribe(types::CDS, &[]).await;
            let _ = c.recv().await;
            // Kept open until the test ends.
            std::future::pending::<()>().await;
        }));
    }
    assert_eq!(
        metric_until(&sx, "sextant_xds_connections", |n| n >= 16).await,
        16
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(&sx, "sextant_xds_connections").await,
        16,
        "more streams than advertised were served"
    );
    assert_eq!(metric(&sx, "sextant_xds_tcp_connections").await, 1);
    for t in opening {
        t.abort();
    }
}

/// Under a low open-file limit (1,024 is common; 300 here), the default
/// maximum of xDS connections leaves room for the rest: with far more
/// silent sockets than file descriptors opened against it, the admin port
/// answers and a registry file edit is still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_connection_limit_leaves_room_under_a_low_open_file_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SMALL).expect("write");
    let sx = Sextant::start_with_nofile(
        dir.path(),
        &[
            "--file",
            file.to_str().expect("path"),
            "--xds-handshake-timeout",
            "60s",
            // One source floods here; its share is the next test's.
            "--xds-max-connections-per-client",
            "1000",
        ],
        Some(300),
    )
    .await;
    let _flood = silent_connections(sx.xds, 400).await;
    let held = metric_until(&sx, "sextant_xds_connections_refused_total", |n| n > 0).await;
    assert!(held > 0);
    let open = metric(&sx, "sextant_xds_tcp_connections").await;
    assert_eq!(open, 300 - 256, "the maximum is the limit less the reserve");
    let (status, _) = sx.get("/healthz/ready").await;
    assert_eq!(status, 200);
    std::fs::write(&file, SMALL.replace("10.0.0.1", "10.0.0.2")).expect("write");
    let mut seen = String::new();
    for _ in 0..100 {
        let config = sx.json("/debug/configz").await;
        seen = config["services"]["web.test.svc"]["endpoints"][0]["address"].to_string();
        if seen.contains("10.0.0.2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.contains("10.0.0.2"),
        "the file edit was not read: {seen}\n{}",
        sx.log()
    );
    assert!(!sx.log().contains("Too many open files"), "{}", sx.log());
}

/// Admin connections that send nothing are closed after 10 s; while the
/// maximum (64) is open, more are refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_admin_connections_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SMALL).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    // Eight addresses, eight each (an address's share): the maximum.
    let mut held = Vec::new();
    for a in 2..10 {
        held.extend(silent_connections_from([127, 0, 0, a], sx.admin, 8).await);
    }
    let mut excess = silent_connections_from([127, 0, 0, 10], sx.admin, 1).await;
    assert!(closed_within(&mut excess[0], Duration::from_secs(2)).await);
    let started = Instant::now();
    for c in &mut held {
        assert!(
            closed_within(c, Duration::from_secs(20)).await,
            "an idle admin connection was kept"
        );
    }
    eprintln!(
        "idle admin connections closed after {:?}",
        started.elapsed()
    );
    let (status, _) = http_get(sx.admin, "localhost", "/healthz/ready")
        .await
        .expect("admin answers again");
    assert_eq!(status, 200);
    assert!(metric(&sx, "sextant_admin_connections_refused_total").await >= 1);
    assert!(metric(&sx, "sextant_admin_connections_timed_out_total").await >= 64);
}

/// 500 connections from one address that dribble a request's headers (a
/// byte a second, which the idle timeout allows) cannot make health
/// unanswerable for others: that address holds its share of the admin
/// connections (8), the rest are refused at once, and `/healthz/ready` from
/// another address answers at once, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_admin_clients_from_one_address_leave_health_answerable() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SMALL).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let slow = silent_connections_from([127, 0, 0, 2], sx.admin, 500).await;
    let dribble = tokio::spawn(async move {
        let mut slow = slow;
        let request = b"GET /debug/configz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        for i in 0.. {
            let byte = &request[i % request.len()..][..1];
            for c in &mut slow {
                let _ = c.write_all(byte).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // Give the flood time to be accepted (and refused).
    metric_until(&sx, "sextant_admin_connections_refused_total", |n| n >= 492).await;
    for _ in 0..10 {
        let asked = Instant::now();
        let (status, _) = tokio::time::timeout(
            Duration::from_secs(5),
            http_get(sx.admin, "localhost", "/healthz/ready"),
        )
        .await
        .expect("health answered within 5 s")
        .expect("health answered");
        assert_eq!(status, 200);
        eprintln!("health answered in {:?}", asked.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        metric(&sx, "sextant_admin_connections_refused_total").await >= 492,
        "the slow address held more than its share"
    );
    assert!(
        sx.log().contains("this address holds its share"),
        "{}",
        sx.log()
    );
    dribble.abort();
}

/// Under the open-file limit of many hosts (1,024), 1,100 silent TCP
/// connections from one address would fill every xDS slot (768) and keep
/// fresh proxies out for as long as the sender reconnects. An address holds
/// a quarter of the slots: a proxy from another address is served at once
/// while the flood goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_xds_connections_from_one_address_leave_room_for_proxies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SMALL).expect("write");
    let sx = Sextant::start_with_nofile(
        dir.path(),
        &["--file", file.to_str().expect("path")],
        Some(1024),
    )
    .await;
    let _flood = silent_connections_from([127, 0, 0, 2], sx.xds, 1100).await;
    let refused = metric_until(&sx, "sextant_xds_connections_refused_total", |n| n >= 908).await;
    assert_eq!(
        metric(&sx, "sextant_xds_tcp_connections").await,
        192,
        "one address holds a quarter of the 768 slots"
    );
    assert!(refused >= 908, "{refused}");
    let took = cds_round_trip(&sx, "fresh-proxy").await;
    eprintln!("a fresh proxy's CDS during the flood: {took:?}");
    // Far below the 10 s handshake timeout a full server would make it wait.
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Resident memory of process `pid`, in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A client that subscribes to many names it makes up, on several
/// streams, makes the server hold them (and an empty assignment answering
/// each) only while its streams are open: the shared caches empty and the
/// process's resident memory comes back down once they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_client_made_the_server_hold_is_released_when_it_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SMALL).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let pid = sx.child.id().expect("pid");
    cds_round_trip(&sx, "warm-up").await;
    let baseline = rss_kib(pid);

    const STREAMS: usize = 8;
    const NAMES: usize = 60_000;
    let mut clients = Vec::new();
    for s in 0..STREAMS {
        let names: Vec<String> = (0..NAMES)
            .map(|i| format!("outbound|8080||made-up-{s}-{i}.hostile.svc"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut c = SotwClient::connect(sx.xds, &format!("hostile-{s}")).await;
        c.subscribe(types::EDS, &refs).await;
        let eds = c.recv().await;
        assert_eq!(eds.resources.len(), NAMES, "every name is answered");
        clients.push(c);
    }
    assert_eq!(
        metric(&sx, "sextant_xds_subscription_names_cached").await,
        (STREAMS * NAMES) as u64
    );
    let peak = rss_kib(pid);
    drop(clients);
    assert_eq!(
        metric_until(&sx, "sextant_xds_subscription_names_cached", |n| n == 0).await,
        0
    );
    assert_eq!(
        metric_until(&sx, "sextant_xds_plan_names_cached", |n| n == 0).await,
        0
    );
    // Freed memory goes back to the system as jemalloc's background
    // threads purge it (dirty pages decay over 10 s, then muzzy ones over
    // 10 s more): poll, bounded.
    let grown = peak.saturating_sub(baseline);
    let started = Instant::now();
    let mut after = rss_kib(pid);
    while after.saturating_sub(baseline) >= grown / 4 && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = rss_kib(pid);
    }
    eprintln!("RSS came down within {:?}", started.elapsed());
    eprintln!(
        "RSS: {} MiB before, {} MiB with {STREAMS} streams of {NAMES} names, {} MiB after they closed",
        baseline / 1024,
        peak / 1024,
        after / 1024
    );
    // Most of what the streams added is given back (the allocator keeps
    // some of the freed memory for reuse): at most a quarter of the growth.
    assert!(
        grown > 100 * 1024,
        "the streams should have cost memory: {grown} KiB"
    );
    assert!(
        after.saturating_sub(baseline) < grown / 4,
        "kept {} of {} KiB",
        after.saturating_sub(baseline),
        grown
    );

    // A request over the size limit ends its stream, and only its stream.
    let names: Vec<String> = (0..120_000)
        .map(|i| format!("outbound|8080||too-big-{i}.hostile.svc"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut c = SotwClient::connect(sx.xds, "too-big").await;
    c.subscribe(types::EDS, &refs).await;
    match c.recv_result().await {
        Err(status) => {
            // tonic's status for a message over the limit.
            assert_eq!(status.code(), tonic::Code::OutOfRange, "{status}");
            assert!(status.message().contains("too large"), "{status}");
        }
        Ok(r) => panic!("a request over 4 MiB was served: {r:?}"),
    }
    cds_round_trip(&sx, "after-the-big-one").await;
}

/// Clients that subscribe to a large mesh and never read their responses
/// (HTTP/2 flow control then stops the server's writes) cost a bounded
/// amount of memory each, and a proxy that does read is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reading_clients_cost_bounded_memory_and_delay_nobody() {
    // Responses far over HTTP/2's 64 KiB window: the CDS response is about
    // 150 KB, the EDS one about 500 KB.
    const SERVICES: usize = 500;
    const CLIENTS: usize = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    let mesh = sextant_testkit::fixtures::mesh(SERVICES, 20);
    std::fs::write(&file, sextant_testkit::fixtures::registry_yaml(&mesh)).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let pid = sx.child.id().expect("pid");
    cds_round_trip(&sx, "warm-up").await;
    // The parse's memory goes back to the system over some seconds.
    let baseline = settled_rss_kib(pid).await;

    let names: Vec<String> = mesh
        .iter()
        .map(|s| format!("outbound|8080||{}", s.hostname))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut silent = Vec::new();
    for i in 0..CLIENTS {
        let mut c = SotwClient::connect(sx.xds, &format!("never-reads-{i}")).await;
        c.subscribe(types::CDS, &[]).await;
        c.subscribe(types::EDS, &refs).await;
        silent.push(c);
    }
    // Give the server time to write what flow control lets through.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_silent = settled_rss_kib(pid).await;
    let started = Instant::now();
    let round_trip = cds_round_trip(&sx, "reads").await;
    eprintln!(
        "RSS {} KiB before, {} KiB with {CLIENTS} never-reading clients of a {SERVICES}-service mesh; a reading proxy's CDS round trip {round_trip:?}",
        baseline, with_silent
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the reading proxy waited"
    );
    let per_client = with_silent.saturating_sub(baseline) / CLIENTS as u64;
    // Stated bound: 256 KiB per never-reading client, half of the EDS
    // response it holds up: responses are encodings shared by every
    // connection, so a copy per connection (or a queue of them) would not
    // fit. Measured: about 50 KiB.
    assert!(
        per_client < 256,
        "{per_client} KiB per never-reading client"
    );
    assert_eq!(
        metric_until(&sx, "sextant_xds_connections", |n| n == CLIENTS as u64).await,
        CLIENTS as u64,
        "the silent clients are still connected (the reading one closed)"
    );
    drop(silent);
}

/// Resident memory once it stops moving: three seconds in which it stayed
/// within 2 MiB (jemalloc gives freed memory back over about 20 s),
/// bounded at 60 s.
async fn settled_rss_kib(pid: u32) -> u64 {
    let started = Instant::now();
    let mut window: Vec<u64> = Vec::new();
    loop {
        window.push(rss_kib(pid));
        if window.len() > 6 {
            window.remove(0);
        }
        let (lo, hi) = (
            window.iter().copied().min().unwrap_or(0),
            window.iter().copied().max().unwrap_or(0),
        );
        if (window.len() == 6 && hi - lo < 2 * 1024) || started.elapsed() > Duration::from_secs(60)
        {
            return hi;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A 100 MB registry file dropped next to a good one: refused by its size
/// before a byte of it is read (the limit is 64 MiB), shown on
/// /debug/registryz, and the good file's services are still served;
/// resident memory does not grow by the file (stated bound 32 MiB, a
/// third of the file: reading it would add at least 100 MB). On a quiet
/// machine it grows by under 1 MiB; once, in a fresh-clone CI run on a
/// loaded machine, by 17 MiB (cause not found; the allocator returns freed
/// memory from a background thread, later under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_registry_file_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("good.yaml"), SMALL).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", dir.path().to_str().expect("path")]).await;
    let pid = sx.child.id().expect("pid");
    cds_round_trip(&sx, "warm-up").await;
    let before = settled_rss_kib(pid).await;

    // Real YAML, 100 MB of it: a service list padded with comments.
    let big = dir.path().join("huge.yaml");
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).expect("create"));
        f.write_all(b"services:\n").expect("write");
        let line = format!("# {}\n", "x".repeat(1022));
        for _ in 0..100_000 {
            f.write_all(line.as_bytes()).expect("write");
        }
        f.flush().expect("flush");
    }
    assert!(std::fs::metadata(&big).expect("stat").len() >= 100_000_000);
    let mut problem = String::new();
    for _ in 0..200 {
        let r = sx.json("/debug/registryz").await;
        if let Some(p) = r["registries"][0]["problems"][0]["message"].as_str() {
            problem = p.to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        problem.contains("huge.yaml") && problem.contains("larger than the limit"),
        "{problem:?}"
    );
    // The size comes from the file's metadata: it was refused before
    // being read (reading stops at the limit and cannot know the size).
    let size = std::fs::metadata(&big).expect("stat").len();
    assert!(problem.contains(&format!("{size} bytes")), "{problem:?}");
    cds_round_trip(&sx, "after-the-huge-one").await;
    let config = sx.json("/debug/configz").await;
    assert!(config["services"]["web.test.svc"].is_object(), "{config}");
    let after = settled_rss_kib(pid).await;
    eprintln!("RSS {before} KiB before the 100 MB file, {after} KiB after");
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

/// A client that writes raw HTTP/2 and ignores the server's stream limit:
/// 10,000 ADS streams opened at once on one connection (a well-behaved
/// HTTP/2 client would queue them; see the test above). At most 16 are
/// ever served, the rest are refused or the connection is closed, and
/// meanwhile another proxy is served and memory stays bounded (stated
/// bound 32 MiB of growth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_on_one_connection_cost_their_sender_only() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SMALL).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let pid = sx.child.id().expect("pid");
    cds_round_trip(&sx, "warm-up").await;
    let before = settled_rss_kib(pid).await;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("small");
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }
    fn literal(out: &mut Vec<u8>, value: &str) {
        out.push(u8::try_from(value.len()).expect("short"));
        out.extend(value.as_bytes());
    }
    // HPACK, no Huffman: POST, http, then literals without indexing.
    let mut headers = vec![0x83, 0x86, 0x04];
    literal(
        &mut headers,
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
    );
    headers.push(0x01);
    literal(&mut headers, &sx.xds.to_string());
    headers.extend([0x0f, 0x10]);
    literal(&mut headers, "application/grpc");
    headers.push(0x00);
    literal(&mut headers, "te");
    literal(&mut headers, "trailers");

    let conn = TcpStream::connect(sx.xds).await.expect("connect");
    let (mut rd, mut wr) = conn.into_split();
    // Counts what the server says: refused streams, GOAWAY, end of
    // connection.
    let reader = tokio::spawn(async move {
        let (mut refused, mut goaway, mut buf) = (0u32, false, Vec::new());
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(2), rd.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
            while buf.len() >= 9 {
                let len =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                match buf[3] {
                    0x3 => refused += 1,
                    0x7 => goaway = true,
                    _ => {}
                }
                buf.drain(..9 + len);
            }
        }
        (refused, goaway)
    });
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    for i in 0..10_000u32 {
        out.extend(frame(0x1, 0x4, 2 * i + 1, &headers));
    }
    // The server may close before reading it all.
    let _ = wr.write_all(&out).await;
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(metric(&sx, "sextant_xds_connections").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served_meanwhile = cds_round_trip(&sx, "meanwhile").await;
    let (refused, goaway) = reader.await.expect("reader");
    eprintln!(
        "10,000 streams opened at once: at most {peak} served at a time, {refused} reset, GOAWAY {goaway}; another proxy's CDS round trip {served_meanwhile:?}"
    );
    assert!(peak <= 16, "{peak} streams served at once");
    assert!(
        refused > 0 || goaway,
        "the server neither refused streams nor closed the connection"
    );
    drop(wr);
    let after = settled_rss_kib(pid).await;
    eprintln!("RSS {before} KiB before, {after} KiB after");
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    cds_round_trip(&sx, "after").await;
}
