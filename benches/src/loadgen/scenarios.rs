//! The scenarios: start a server role, storm it with proxies, change the
//! mesh, measure.

use super::*;

pub(super) struct Server {
    pub(super) child: tokio::process::Child,
    pub(super) xds: SocketAddr,
    pub(super) control: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl Server {
    pub(super) async fn start(
        role: &str,
        services: usize,
        endpoints: usize,
        extra: &[String],
    ) -> Server {
        let exe = std::env::current_exe().expect("exe");
        let mut command = tokio::process::Command::new(exe);
        command.arg(role);
        // The file role reads its mesh from the file.
        if role != "serve-file" {
            command.args([
                "--services",
                &services.to_string(),
                "--endpoints",
                &endpoints.to_string(),
            ]);
        }
        let mut child = command
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let line = BufReader::new(stdout)
            .lines()
            .next_line()
            .await
            .expect("read")
            .expect("ready line");
        let parts: Vec<&str> = line.split_whitespace().collect();
        let xds = parts[1].parse().expect("xds addr");
        let control: SocketAddr = parts[2].parse().expect("control addr");
        let control = BufReader::new(
            tokio::net::TcpStream::connect(control)
                .await
                .expect("control"),
        );
        Server {
            child,
            xds,
            control,
        }
    }

    pub(super) async fn flip(&mut self, n: u64) {
        self.command(&format!("flip {n}")).await;
    }

    /// Sends one control command; returns its reply.
    pub(super) async fn command(&mut self, line: &str) -> String {
        self.control
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("command");
        let mut reply = String::new();
        self.control.read_line(&mut reply).await.expect("reply");
        assert!(reply.starts_with("ok"), "{line}: {reply}");
        reply.trim().to_owned()
    }

    pub(super) fn proc_stat(&self) -> (f64, u64, u64) {
        let pid = self.child.id().unwrap_or(0);
        let cpu = super::cpu_seconds(pid);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (cpu, kb("VmRSS:"), kb("VmHWM:"))
    }
}

pub(super) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

pub(super) async fn wait_until(
    stats: &Stats,
    done: impl Fn(&Stats) -> bool,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    while !done(stats) {
        if Instant::now() > deadline {
            return false;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), stats.progress.notified()).await;
    }
    true
}

/// Connects `n` proxies at once; returns them configured and the timings.
pub(super) async fn storm(
    addr: SocketAddr,
    n: usize,
    delta: bool,
) -> (
    Arc<Stats>,
    serde_json::Value,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let s = stats.clone();
            if delta {
                tokio::spawn(delta_proxy(addr, i, s))
            } else {
                tokio::spawn(sotw_proxy(addr, i, s))
            }
        })
        .collect();
    let ok = wait_until(
        &stats,
        |s| s.configured.lock().expect("lock").len() >= n,
        Duration::from_secs(120),
    )
    .await;
    let mut t: Vec<Duration> = stats
        .configured
        .lock()
        .expect("lock")
        .iter()
        .map(|i| *i - start)
        .collect();
    t.sort();
    let v = serde_json::json!({
        "proxies": n, "configured": t.len(), "complete": ok,
        "p50_ms": ms(pct(&t, 0.5)), "p99_ms": ms(pct(&t, 0.99)), "max_ms": ms(t.last().copied().unwrap_or_default()),
    });
    (stats, v, tasks)
}

/// `flips` endpoint flips, each waited for until every proxy ACKed it.
pub(super) async fn flips(
    server: &mut Server,
    stats: &Stats,
    n: usize,
    flips: usize,
) -> serde_json::Value {
    let mut conv = Vec::new();
    let mut incomplete = 0;
    for f in 1..=flips as u64 {
        let change = async {
            let t0 = Instant::now();
            server.flip(f).await;
            t0
        };
        let (changed, complete, last) =
            marked_change(stats, n, f, Duration::from_secs(10), change).await;
        incomplete += usize::from(!complete);
        if let Some(last) = last {
            conv.push(last - changed);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    conv.sort();
    serde_json::json!({
        "flips": flips, "incomplete": incomplete,
        "p50_ms": ms(pct(&conv, 0.5)), "p99_ms": ms(pct(&conv, 0.99)), "max_ms": ms(conv.last().copied().unwrap_or_default()),
        "resources_per_flip_per_proxy": stats.flip_resources.load(Ordering::Relaxed) as f64 / (flips * n).max(1) as f64,
    })
}

/// Runs change number `epoch`, which ends with the marker and returns when
/// its last change was made; then waits (at most `limit`) until all `n`
/// proxies ACKed a response carrying the marker. Returns the time of the
/// last change, whether all ACKed, and the last ACK.
pub(super) async fn marked_change(
    stats: &Stats,
    n: usize,
    epoch: u64,
    limit: Duration,
    change: impl std::future::Future<Output = Instant>,
) -> (Instant, bool, Option<Instant>) {
    stats.flip_acks.lock().expect("lock").clear();
    stats.flip_epoch.store(epoch, Ordering::Release);
    let changed = change.await;
    let complete = wait_until(
        stats,
        |s| s.flip_acks.lock().expect("lock").len() >= n,
        limit,
    )
    .await;
    let last = stats.flip_acks.lock().expect("lock").iter().max().copied();
    (changed, complete, last)
}

/// S3: rollouts of `changes` endpoint changes over `over`, each ended by
/// the marker; convergence is from the last change to the last proxy's ACK
/// of the response that carries the marker.
pub(super) async fn bursts(
    server: &mut Server,
    stats: &Stats,
    n: usize,
    changes: usize,
    over: Duration,
    count: u64,
) -> serde_json::Value {
    let mut after_last = Vec::new();
    let mut incomplete = 0;
    for b in 1..=count {
        let change = async {
            let t0 = Instant::now();
            let reply = server
                .command(&format!("burst {changes} {} {b}", over.as_millis()))
                .await;
            let took: u64 = reply
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .expect("burst duration");
            t0 + Duration::from_micros(took)
        };
        let (last_change, complete, last) =
            marked_change(stats, n, b, Duration::from_secs(30), change).await;
        incomplete += usize::from(!complete);
        if let Some(last) = last {
            after_last.push(last.saturating_duration_since(last_change));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ms_list: Vec<f64> = after_last.iter().map(|d| ms(*d)).collect();
    serde_json::json!({
        "bursts": count, "changes_per_burst": changes, "over_ms": over.as_millis() as u64,
        "incomplete": incomplete, "after_last_change_ms": ms_list,
        "max_after_last_change_ms": ms(after_last.iter().max().copied().unwrap_or_default()),
    })
}

/// S3's size: (changes per burst, bursts).
pub(super) fn s3_size(quick: bool) -> (usize, u64) {
    if quick { (1_000, 3) } else { (10_000, 3) }
}

pub(super) async fn scenario(
    role: &str,
    name: &str,
    quick: bool,
    delta: bool,
    proxies: Option<usize>,
) -> serde_json::Value {
    let (services, endpoints, n, nflips) = match (name, quick) {
        ("s4", true) => (1, 10_000, 100, 20),
        ("s4", false) => (1, 10_000, 1000, 200),
        ("s5", true) => (100, 10, 200, 0),
        ("s5", false) => (1000, 10, 1000, 0),
        (_, true) => (100, 10, 100, 20),
        (_, false) => (1000, 10, 1000, 200),
    };
    let n = proxies.unwrap_or(n);
    let (changes, nbursts) = s3_size(quick);
    // Only the floor pre-encodes bursts; Sextant computes them.
    let extra = if role == "floor" {
        vec!["--burst".to_owned(), changes.to_string()]
    } else {
        Vec::new()
    };
    let mut server = Server::start(role, services, endpoints, &extra).await;
    let (cpu0, _, _) = server.proc_stat();
    let (stats, connect, tasks) = storm(server.xds, n, delta).await;
    let (cpu1, rss1, _) = server.proc_stat();
    let mut out = serde_json::json!({
        "server": role, "scenario": name, "delta": delta, "services": services, "endpoints_per_service": endpoints,
        "connect": connect, "connect_cpu_s": cpu1 - cpu0, "rss_after_connect_kib": rss1,
        "connect_bytes": stats.bytes(),
    });
    let bytes1 = stats.bytes();
    if name == "s2" || name == "s4" {
        let f = flips(&mut server, &stats, n, nflips).await;
        let (cpu2, _, _) = server.proc_stat();
        out["flips"] = f;
        out["flips_cpu_s"] = serde_json::json!(cpu2 - cpu1);
        out["flips_bytes"] = serde_json::json!(stats.bytes() - bytes1);
    }
    if name == "s3" {
        let b = bursts(
            &mut server,
            &stats,
            n,
            changes,
            Duration::from_secs(1),
            nbursts,
        )
        .await;
        let (cpu2, _, _) = server.proc_stat();
        out["bursts"] = b;
        out["bursts_cpu_s"] = serde_json::json!(cpu2 - cpu1);
        out["bursts_bytes"] = serde_json::json!(stats.bytes() - bytes1);
    }
    if name == "s5" {
        // Five times the proxies, idle: the memory each one costs.
        let (more, _, more_tasks) = storm(server.xds, 4 * n, delta).await;
        drop(more);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, rss5, _) = server.proc_stat();
        out["rss_5x_kib"] = serde_json::json!(rss5);
        out["kib_per_extra_proxy"] =
            serde_json::json!((rss5 as f64 - rss1 as f64) / (4 * n) as f64);
        for t in more_tasks {
            t.abort();
        }
    }
    let (_, _, hwm) = server.proc_stat();
    out["peak_rss_kib"] = serde_json::json!(hwm);
    // How often a connection's next step was computed by itself or taken
    // from another connection in the same state (the floor has no plans).
    let plans = server.command("plans").await;
    let mut counts = plans
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse::<u64>().ok());
    if let (Some(computed), Some(shared)) = (counts.next().flatten(), counts.next().flatten()) {
        out["plans_computed"] = serde_json::json!(computed);
        out["plans_shared"] = serde_json::json!(shared);
    }
    out["failures"] = serde_json::json!(stats.failures.load(Ordering::Relaxed));
    for t in tasks {
        t.abort();
    }
    out
}

/// S6: a registry file of `services` x 10 endpoints; from process start to
/// ready (every registry read) and to one proxy fully configured, and peak
/// RSS. The reference is parsing the same file into the model alone.
/// S6: Sextant started on one registry file (YAML, or JSON with `json`);
/// the reference is parsing that file into the model, alone.
pub(super) async fn scenario_s6(quick: bool, json: bool) -> serde_json::Value {
    let services = if quick { 1_000 } else { 10_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = fixtures::mesh(services, 10);
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Doc {
        services: Vec<Service>,
    }
    let (path, text) = if json {
        let text = serde_json::to_string(&Doc { services: mesh }).expect("json");
        (dir.path().join("mesh.json"), text)
    } else {
        (dir.path().join("mesh.yaml"), fixtures::registry_yaml(&mesh))
    };
    std::fs::write(&path, &text).expect("write");
    let t = Instant::now();
    let read = std::fs::read_to_string(&path).expect("read");
    let parsed: Doc = if json {
        serde_json::from_str(&read).expect("parse")
    } else {
        serde_yaml_ng::from_str(&read).expect("parse")
    };
    let parse = t.elapsed();
    drop(parsed);

    let t0 = Instant::now();
    let path_arg = path.display().to_string();
    let server = Server::start("serve-file", 0, 0, &["--file".to_owned(), path_arg]).await;
    let ready = t0.elapsed();
    let (stats, connect, tasks) = storm(server.xds, 1, false).await;
    let serving = t0.elapsed();
    let (cpu, rss, hwm) = server.proc_stat();
    for t in tasks {
        t.abort();
    }
    serde_json::json!({
        "sextant": {
            "scenario": "s6", "format": if json { "json" } else { "yaml" },
            "services": services, "endpoints": services * 10,
            "file_bytes": text.len(), "ready_ms": ms(ready), "serving_ms": ms(serving),
            "connect": connect, "cpu_s": cpu, "rss_kib": rss, "peak_rss_kib": hwm,
            "failures": stats.failures.load(Ordering::Relaxed),
        },
        "floor": { "parse_only_ms": ms(parse) },
    })
}

/// S7: per-proxy scoping. 1,000 services in 100 namespaces, 1,000 proxies
/// spread over them, each scoped to its namespace and `ns-0` (which holds
/// the flipped service): connect and flips, against the same run unscoped
/// and against the floor (which serves everything).
pub(super) async fn scenario_s7(
    quick: bool,
    delta: bool,
    proxies: Option<usize>,
) -> serde_json::Value {
    let (services, n, namespaces, nflips) = if quick {
        (100, 100, 10, 20)
    } else {
        (1000, 1000, 100, 200)
    };
    let n = proxies.unwrap_or(n);
    PROXY_NAMESPACES.store(namespaces, Ordering::Relaxed);
    let mut runs = serde_json::Map::new();
    for (key, role, scoped) in [
        ("sextant", "serve", true),
        ("unscoped", "serve", false),
        ("floor", "floor", false),
    ] {
        let mut extra = vec!["--namespaces".to_owned(), namespaces.to_string()];
        if role == "floor" {
            extra.clear();
        }
        if scoped {
            extra.push("--scoped".to_owned());
        }
        let mut server = Server::start(role, services, 10, &extra).await;
        let (cpu0, _, _) = server.proc_stat();
        let (stats, connect, tasks) = storm(server.xds, n, delta).await;
        let (cpu1, rss1, _) = server.proc_stat();
        let bytes1 = stats.bytes();
        let f = flips(&mut server, &stats, n, nflips).await;
        let (cpu2, _, hwm) = server.proc_stat();
        runs.insert(
            key.to_owned(),
            serde_json::json!({
                "server": role, "scenario": "s7", "scoped": scoped, "delta": delta,
                "services": services, "namespaces": namespaces,
                "connect": connect, "connect_cpu_s": cpu1 - cpu0, "rss_after_connect_kib": rss1,
                "connect_bytes_per_proxy": bytes1 / n.max(1) as u64,
                "flips": f, "flips_cpu_s": cpu2 - cpu1,
                "flips_bytes_per_proxy": (stats.bytes() - bytes1) / n.max(1) as u64,
                "peak_rss_kib": hwm,
                "failures": stats.failures.load(Ordering::Relaxed),
            }),
        );
        for t in tasks {
            t.abort();
        }
    }
    PROXY_NAMESPACES.store(0, Ordering::Relaxed);
    serde_json::Value::Object(runs)
}

/// DNS: services whose names Sextant resolves (ServiceEntries with
/// resolution DNS in a registry file), proxies connected: how many queries
/// reach the DNS server per name and TTL, during the connect storm and
/// after it, against what one query per name per TTL would be.
pub(super) async fn scenario_dns(quick: bool, proxies: Option<usize>) -> serde_json::Value {
    let (names, n, window) = if quick {
        (10, 100, Duration::from_secs(4))
    } else {
        (100, 1000, Duration::from_secs(10))
    };
    let n = proxies.unwrap_or(n);
    let ttl: u32 = 2;
    let dns = sextant_testkit::dns::CountingDns::start().await;
    let mut text = String::from("serviceEntries:\n");
    for i in 0..names {
        let host = format!("ext-{i}.example.test");
        let ip = std::net::IpAddr::from([127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8]);
        dns.set(&host, &[ip], ttl);
        text.push_str(&format!(
            "  - {{ name: ext-{i}, namespace: mesh, hosts: [{host}], resolution: DNS, ports: [{{ number: 8080, name: http }}] }}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("entries.yaml");
    std::fs::write(&path, &text).expect("write");
    let total = |dns: &sextant_testkit::dns::CountingDns| -> u64 {
        (0..names)
            .map(|i| dns.queries(&format!("ext-{i}.example.test")))
            .sum()
    };
    let server = Server::start(
        "serve-file",
        0,
        0,
        &[
            "--file".to_owned(),
            path.display().to_string(),
            "--dns-server".to_owned(),
            dns.addr().to_string(),
        ],
    )
    .await;
    let q0 = total(&dns);
    let (cpu0, _, _) = server.proc_stat();
    let (stats, connect, tasks) = storm(server.xds, n, false).await;
    let q1 = total(&dns);
    tokio::time::sleep(window).await;
    let q2 = total(&dns);
    let (cpu1, _, hwm) = server.proc_stat();
    for t in tasks {
        t.abort();
    }
    let ttls = window.as_secs_f64() / f64::from(ttl);
    serde_json::json!({
        "sextant": {
            "scenario": "dns", "names": names, "proxies": n, "ttl_s": ttl,
            "window_s": window.as_secs_f64(),
            "queries_before_serving": q0, "queries_during_connect": q1 - q0,
            "queries_in_window": q2 - q1,
            "queries_per_name_per_ttl": (q2 - q1) as f64 / names as f64 / ttls,
            "connect": connect, "cpu_s": cpu1 - cpu0, "peak_rss_kib": hwm,
            "failures": stats.failures.load(Ordering::Relaxed),
        },
    })
}

pub(super) async fn run(args: &RunArgs) -> i32 {
    let (name, quick, proxies) = (args.scenario.clone(), args.quick, args.proxies);
    if name == "dns" {
        let result = scenario_dns(quick, proxies).await;
        println!("{}", serde_json::to_string_pretty(&result).expect("json"));
        return 0;
    }
    if name == "s7" {
        let result = scenario_s7(quick, args.delta, proxies).await;
        println!("{}", serde_json::to_string_pretty(&result).expect("json"));
        eprintln!("scoped against unscoped:");
        eprint!("{}", table_against(&result, "unscoped"));
        eprintln!("scoped against the floor:");
        eprint!("{}", table(&result));
        return 0;
    }
    if name == "s6" {
        let result = scenario_s6(quick, args.json).await;
        println!("{}", serde_json::to_string_pretty(&result).expect("json"));
        eprint!("{}", table(&result));
        return 0;
    }
    let delta = args.delta || name == "s4";
    let sextant = scenario("serve", &name, quick, delta, proxies).await;
    let floor = scenario("floor", &name, quick, delta, proxies).await;
    let result = serde_json::json!({ "sextant": sextant, "floor": floor });
    println!("{}", serde_json::to_string_pretty(&result).expect("json"));
    eprint!("{}", table(&result));
    0
}
