//! The server roles: Sextant serving a generated mesh (`serve`) or a
//! registry file (`serve-file`), driven over stdin by the scenario runner.

use super::*;

/// The service the flips toggle: endpoint 0 of service 0.
pub(super) fn flipped(mesh: &[Service], n: u64) -> Service {
    let mut s = mesh[0].clone();
    s.endpoints[0].health = if n % 2 == 1 {
        Health::Unhealthy
    } else {
        Health::Healthy
    };
    s
}

/// The cluster whose assignment every change scenario ends with: proxies
/// count an ACK as a change's only when the response carries it.
pub(super) const MARKER: &str = "outbound|8080||svc-0.mesh.svc";

/// The services after burst `b` of a rollout: `changes` endpoint health
/// toggles spread over services 1.. (service 0 is the marker), then the
/// marker flipped to `b`'s state.
pub(super) fn after_bursts(mesh: &[Service], changes: usize, bursts: u64) -> Vec<Service> {
    let mut state = mesh.to_vec();
    for b in 1..=bursts {
        for k in 0..changes {
            burst_change(&mut state, k);
        }
        state[0] = flipped(mesh, b);
    }
    state
}

/// Change `k` of a burst; returns the index of the service it touched.
pub(super) fn burst_change(state: &mut [Service], k: usize) -> usize {
    let others = state.len() - 1;
    let s = 1 + k % others;
    let e = (k / others) % state[s].endpoints.len();
    let ep = &mut state[s].endpoints[e];
    ep.health = if ep.health == Health::Healthy {
        Health::Unhealthy
    } else {
        Health::Healthy
    };
    s
}

pub(super) type Reply = futures::future::BoxFuture<'static, String>;

/// Serves the control port: `flip N`, `burst CHANGES MILLIS N` and `plans`
/// lines, each answered with one line.
pub(super) async fn control_loop(
    listener: tokio::net::TcpListener,
    metrics: Option<Arc<sextant_xds::Metrics>>,
    handler: impl Fn(Vec<u64>) -> Reply + Send + Sync + 'static,
) {
    let handler = Arc::new(handler);
    while let Ok((conn, _)) = listener.accept().await {
        let handler = handler.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let (r, mut w) = conn.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let numbers: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|n| n.parse().ok())
                    .collect();
                let mut words = line.split_whitespace();
                let reply = match (words.next(), numbers.len()) {
                    (Some("flip"), 1) => handler(numbers).await,
                    (Some("burst"), 3) => handler(numbers).await,
                    // Plans computed and shared so far (Sextant only).
                    (Some("plans"), 0) => match &metrics {
                        Some(m) => format!(
                            "ok {} {}",
                            sextant_xds::Metrics::get(&m.plans_computed_total),
                            sextant_xds::Metrics::get(&m.plans_shared_total)
                        ),
                        None => "ok".to_owned(),
                    },
                    _ => "error".to_owned(),
                };
                let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
            }
        });
    }
}

/// `flip N` (one number) or `burst CHANGES MILLIS N`: the command's numbers.
pub(super) fn burst_args(numbers: &[u64]) -> Option<(usize, Duration, u64)> {
    match numbers {
        [c, ms, n] => Some((*c as usize, Duration::from_millis(*ms), *n)),
        _ => None,
    }
}

/// Starts Sextant on `registry`, waits until it serves, and prints the
/// line the driver reads: `ready XDS_ADDR CONTROL_ADDR`.
pub(super) async fn start_announced(
    registry: impl sextant_core::Registry,
    server: sextant_xds::ServerConfig,
    dns: Option<sextant::DnsSettings>,
) -> (sextant::Running, tokio::net::TcpListener) {
    let running = sextant::Sextant::new()
        .registry(registry)
        .server_config(server)
        .resolve_names(dns)
        .xds_addr("127.0.0.1:0".parse().expect("addr"))
        .admin_addr(None)
        .start()
        .await
        .expect("start");
    running.aggregator().ready().await.expect("ready");
    let control = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "ready {} {}",
        running
            .xds_addr
            .unwrap_or_else(|| unreachable!("the plaintext port is on")),
        control.local_addr().expect("addr")
    );
    (running, control)
}

pub(super) async fn serve(args: &MeshArgs) -> i32 {
    let mut mesh = fixtures::mesh(args.services, args.endpoints);
    if args.namespaces > 0 {
        for (i, s) in mesh.iter_mut().enumerate() {
            s.namespace = format!("ns-{}", i % args.namespaces);
        }
    }
    let mut server = sextant_xds::ServerConfig::default();
    if args.scoped {
        server.scoping.default_hosts = ["./*", "ns-0/*"]
            .iter()
            .map(|h| sextant_core::ScopeHost::parse(h).expect("entry"))
            .collect();
    }
    let registry = MemoryRegistry::new("memory/load");
    registry.reset(mesh.clone());
    let (running, control) = start_announced(registry.clone(), server, None).await;
    let metrics = Some(running.xds().metrics().clone());
    let state = Arc::new(Mutex::new(mesh.clone()));
    control_loop(control, metrics, move |numbers| {
        let (registry, mesh, state) = (registry.clone(), mesh.clone(), state.clone());
        Box::pin(async move {
            match burst_args(&numbers) {
                None => {
                    registry.insert(flipped(&mesh, numbers[0]));
                    "ok".to_owned()
                }
                Some((changes, over, n)) => {
                    // Spread the changes evenly over `over`, a batch a millisecond.
                    let start = Instant::now();
                    let ticks = over.as_millis().max(1) as usize;
                    let per_tick = changes.div_ceil(ticks).max(1);
                    let mut tick = tokio::time::interval(Duration::from_millis(1));
                    let mut k = 0;
                    while k < changes {
                        tick.tick().await;
                        let batch: Vec<Service> = {
                            let mut st = state.lock().expect("lock");
                            (k..(k + per_tick).min(changes))
                                .map(|k| {
                                    let i = burst_change(&mut st, k);
                                    st[i].clone()
                                })
                                .collect()
                        };
                        k += batch.len();
                        for s in batch {
                            registry.insert(s);
                        }
                    }
                    let marker = flipped(&mesh, n);
                    state.lock().expect("lock")[0] = marker.clone();
                    registry.insert(marker);
                    format!("ok {}", start.elapsed().as_micros())
                }
            }
        })
    })
    .await;
    0
}

/// S6's server: Sextant with the file registry on `--file`.
pub(super) async fn serve_file(args: &FileArgs) -> i32 {
    let path = args.file.clone();
    let (_running, control) = start_announced(
        sextant_file::FileRegistry::new(
            "file/main",
            vec![path.into()],
            sextant_file::FileRegistryConfig::default(),
        ),
        sextant_xds::ServerConfig::default(),
        args.dns_server.map(|server| sextant::DnsSettings {
            servers: vec![server],
            ..Default::default()
        }),
    )
    .await;
    control_loop(control, None, |_| Box::pin(async { "error".to_owned() })).await;
    0
}
