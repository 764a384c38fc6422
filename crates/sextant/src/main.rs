//! The `sextant` command: run the control plane, check a configuration, or
//! print a bootstrap for Envoy or a proxyless gRPC client.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use sextant::config::{RunArgs, Settings, defaults};
use sextant_xds::bootstrap::{ClientTls, Spec, Workload};

/// The pod side's commands (agent, inject, webhook).
#[path = "main/pod.rs"]
mod pod;
use pod::{AgentCli, InjectArgs, WebhookCli};

/// The operator's commands (status, wait).
#[path = "main/ops/mod.rs"]
mod ops;

/// jemalloc, whose background threads return freed memory to the operating
/// system: what a client made the server hold leaves with it, in resident
/// memory too (glibc's malloc kept most of it; see ARCHITECTURE.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A service-mesh control plane: registries in, xDS out.
#[derive(Parser)]
#[command(name = "sextant", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Check the settings and every registry file; print every problem.
    CheckConfig(Box<RunArgs>),
    /// Print an Envoy bootstrap (YAML), or a gRPC xDS bootstrap with --grpc.
    Bootstrap(Box<BootstrapArgs>),
    /// etcd helpers.
    #[command(subcommand)]
    Etcd(EtcdCommand),
    /// Apply (or print, with --dry-run) the iptables rules that capture a
    /// pod's traffic for its capture-mode proxy, in the current network
    /// namespace; --cleanup removes them.
    Iptables(Box<IptablesArgs>),
    /// The pod agent (pilot-agent's job): writes Envoy's bootstrap from the
    /// pod, starts and supervises Envoy, answers readiness on 15021, and
    /// drains within one deadline on SIGTERM or POST /quitquitquit.
    Agent(Box<AgentCli>),
    /// Add the proxy to the pod templates of Kubernetes manifests (Istio's
    /// kube-inject), printed on stdout; or, with --audit, list the pods of
    /// injection-enabled namespaces that escaped injection.
    Inject(Box<InjectArgs>),
    /// The mutating admission webhook that injects pods (HTTPS); `webhook
    /// certs` makes its certificate.
    Webhook(Box<WebhookCli>),
    /// Every connected proxy of every replica: per type SYNCED, SENT,
    /// STALE, NACKED or NOT SENT, and CURRENT or BEHIND (whether it holds
    /// what the newest snapshot gives it); --events adds what happened.
    Status(Box<ops::StatusArgs>),
    /// Wait until every connected proxy holds a service as Sextant knows it
    /// (`--for service/HOST`): what a pipeline runs after an apply.
    Wait(Box<ops::WaitArgs>),
    /// What one connected proxy receives (clusters, endpoints, listeners,
    /// routes), as tables, from Sextant's own view over CSDS: no access to
    /// the proxy's admin port needed.
    ProxyConfig(Box<ops::ProxyConfigArgs>),
    /// Where a service comes from, its endpoints, the rules bound to it,
    /// its conflicts, and the proxies that receive it (`service/HOST`).
    Describe(Box<ops::DescribeArgs>),
}

#[derive(Args)]
struct IptablesArgs {
    #[command(flatten)]
    rules: sextant::iptables::CaptureRules,
    /// Print the rules (iptables-restore input) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove the rules instead.
    #[arg(long, conflicts_with = "dry_run")]
    cleanup: bool,
}

#[derive(Subcommand)]
enum EtcdCommand {
    /// Keep one instance registered in etcd, with a lease, until stopped
    /// (SIGTERM/Ctrl-C revokes it; a crash lets it expire after --ttl).
    Register(Box<RegisterArgs>),
}

#[derive(Args)]
struct RegisterArgs {
    /// The service's hostname.
    #[arg(long)]
    hostname: String,
    /// The instance's address (IP or DNS name).
    #[arg(long)]
    address: String,
    /// A port, NAME=PORT (repeatable); the protocol comes from the name.
    #[arg(long = "port", value_name = "NAME=PORT", required = true)]
    ports: Vec<String>,
    /// Lease time to live: how long the endpoint outlives a crash.
    #[arg(long, default_value = "10s")]
    ttl: String,
    /// The key's last part [default: ADDRESS-PORT].
    #[arg(long)]
    id: Option<String>,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    #[command(flatten)]
    etcd: sextant::config::EtcdArgs,
}

#[derive(Args)]
struct BootstrapArgs {
    /// The node id the proxy reports.
    #[arg(long, env = "SEXTANT_NODE_ID")]
    node_id: String,
    /// The node's cluster.
    #[arg(long, default_value = "sextant")]
    cluster: String,
    /// Sextant's xDS address, HOST:PORT; repeat it (or separate with
    /// commas) for replicas: Envoy fails over between them.
    #[arg(
        long = "xds-addr",
        default_value = "127.0.0.1:15010",
        value_delimiter = ','
    )]
    xds_addrs: Vec<String>,
    /// Envoy's admin port (on 127.0.0.1; 0 picks a free one).
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// Use incremental (delta) xDS.
    #[arg(long)]
    delta: bool,
    /// Print a bootstrap for proxyless gRPC clients (GRPC_XDS_BOOTSTRAP) instead.
    #[arg(long, conflicts_with = "delta")]
    grpc: bool,
    /// The namespace the node claims (node metadata NAMESPACE); with mTLS
    /// it must match the namespace of its certificate's SPIFFE id.
    #[arg(long)]
    namespace: Option<String>,
    /// The workload's labels, k=v,... (node metadata LABELS).
    #[arg(long, value_delimiter = ',', value_name = "K=V,...")]
    labels: Vec<String>,
    /// The workload's instance IPs (node metadata INSTANCE_IPS).
    #[arg(long = "ip", value_delimiter = ',', value_name = "IP,...")]
    ips: Vec<std::net::IpAddr>,
    /// How traffic reaches the proxy: explicit (the application sends to
    /// its listeners) or capture (iptables) (node metadata
    /// INTERCEPTION_MODE NONE or REDIRECT); router: an Envoy at the edge
    /// serving the gateway --gateway names (node metadata GATEWAY).
    #[arg(long, value_name = "MODE", value_parser = ["explicit", "capture", "router"])]
    mode: Option<String>,
    /// With --mode router: the gateway it serves, NAMESPACE/NAME (its
    /// namespace is the node's unless --namespace says otherwise).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    gateway: Option<String>,
    /// With --mode router: the address its gateway's listeners bind to.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    gateway_bind: std::net::IpAddr,
    /// With --mode router: added to the gateway's declared ports below
    /// 1024 (80 listens at 8080 with 8000), so that Envoy needs no
    /// privilege; the Service in front maps the declared port to it.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64511))]
    gateway_port_offset: u32,
    /// Connect to Sextant's TLS port (--xds-addr should name it, e.g.
    /// HOST:15012), trusting the CA in --ca.
    #[arg(long, requires = "ca")]
    tls: bool,
    /// The CA certificate (PEM file) that signed Sextant's certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<String>,
    /// This proxy's certificate (PEM file), for mTLS.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<String>,
    /// This proxy's private key (PEM file), for mTLS.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    key: Option<String>,
    /// A file holding a bearer token (a service-account token) that the
    /// proxy sends with its stream, for --xds-auth token. With --tls, Envoy
    /// reads the file again for every new stream (a rotated token is picked
    /// up); without, the token is read now and written into the bootstrap.
    /// With --grpc (and --tls), a JWT file read by the client (gRFC A97
    /// jwt_token_file call credentials).
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The server name to send and to require in Sextant's certificate
    /// [default: the host of the first --xds-addr]. Envoy only.
    #[arg(long, value_name = "NAME", requires = "tls", conflicts_with = "grpc")]
    sni: Option<String>,
    /// The agent's SDS socket (`sextant agent` serves the workload
    /// certificate there): adds the `sds-grpc` cluster. Envoy only.
    #[arg(long, value_name = "PATH", conflicts_with = "grpc")]
    sds_socket: Option<std::path::PathBuf>,
    /// The agent's certificate directory (cert-chain.pem, key.pem,
    /// root-cert.pem): adds a `file_watcher` certificate provider named
    /// `default`. With --grpc only.
    #[arg(long, value_name = "DIR", requires = "grpc")]
    cert_dir: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    // The flags' help shows each library default (`config::defaults`).
    let matches = defaults::annotate(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Some(Command::Bootstrap(b)) => bootstrap(&b),
        Some(Command::CheckConfig(args)) => check_config(&args),
        Some(Command::Etcd(EtcdCommand::Register(args))) => etcd_register(&args),
        Some(Command::Iptables(args)) => iptables(&args),
        Some(Command::Agent(a)) => pod::agent(*a),
        Some(Command::Inject(a)) => pod::inject(&a),
        Some(Command::Webhook(w)) => pod::webhook(*w),
        Some(Command::Status(a)) => on_runtime(|rt| ops::status(&a, rt)),
        Some(Command::Wait(a)) => on_runtime(|rt| ops::wait(&a, rt)),
        Some(Command::ProxyConfig(a)) => on_runtime(|rt| ops::proxy_config(&a, rt)),
        Some(Command::Describe(a)) => on_runtime(|rt| ops::describe(&a, rt)),
        None => run(&cli.run),
    }
}

/// Runs `command` on the commands' runtime (or fails as [`runtime`] does).
fn on_runtime(command: impl FnOnce(&tokio::runtime::Runtime) -> ExitCode) -> ExitCode {
    match runtime() {
        Ok(rt) => command(&rt),
        Err(code) => code,
    }
}

/// The runtime the commands run on.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

fn bootstrap(b: &BootstrapArgs) -> ExitCode {
    let labels = match sextant_xds::bootstrap::parse_labels(&b.labels) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let router = b.mode.as_deref() == Some("router");
    let gateway = match (router, &b.gateway) {
        (true, Some(g)) => match g.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Some((ns.to_owned(), g.clone()))
            }
            _ => {
                eprintln!("error: --gateway {g:?}: write NAMESPACE/NAME");
                return ExitCode::FAILURE;
            }
        },
        (true, None) => {
            eprintln!("error: --mode router needs --gateway NAMESPACE/NAME");
            return ExitCode::FAILURE;
        }
        (false, Some(_)) => {
            eprintln!("error: --gateway is for --mode router");
            return ExitCode::FAILURE;
        }
        (false, None) => None,
    };
    let spec = Spec {
        node_id: b.node_id.clone(),
        cluster: b.cluster.clone(),
        xds_addrs: b.xds_addrs.clone(),
        admin_addr: format!("127.0.0.1:{}", b.admin_port),
        delta: b.delta,
        // A router claims its gateway's namespace unless told otherwise.
        namespace: b
            .namespace
            .clone()
            .or_else(|| gateway.as_ref().map(|(ns, _)| ns.clone())),
        workload: Workload {
            labels,
            ips: b.ips.clone(),
            capture: b
                .mode
                .as_deref()
                .filter(|m| *m != "router")
                .map(|m| m == "capture"),
            router: gateway.map(|(_, g)| (g, b.gateway_bind, b.gateway_port_offset)),
        },
        tls: b.tls.then(|| ClientTls {
            ca: b.ca.clone().unwrap_or_default(),
            cert: b.cert.clone(),
            key: b.key.clone(),
            sni: b.sni.clone(),
        }),
        token_file: b.token_file.clone(),
        sds_socket: b.sds_socket.clone(),
        cert_dir: b.cert_dir.clone(),
    };
    let printed = if b.grpc {
        spec.grpc().map(|g| println!("{}", g.to_json()))
    } else {
        spec.envoy().map(|(e, notes)| {
            for n in notes {
                eprintln!("note: {n}");
            }
            print!("{}", e.to_yaml());
        })
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn iptables(args: &IptablesArgs) -> ExitCode {
    use sextant::iptables;
    if args.dry_run {
        print!("{}", args.rules.restore_input());
        return ExitCode::SUCCESS;
    }
    let tools = match iptables::tools() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.cleanup {
        iptables::cleanup(&tools);
        eprintln!("removed the SEXTANT_* chains ({})", tools.version);
        return ExitCode::SUCCESS;
    }
    match iptables::apply(&args.rules, &tools) {
        Ok(()) => {
            eprintln!(
                "applied: inbound TCP to port {}, outbound TCP to port {}, user {} exempt ({})",
                args.rules.inbound_port,
                args.rules.outbound_port,
                args.rules.proxy_uid,
                tools.version
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(args: &RunArgs) -> ExitCode {
    let settings = match Settings::resolve(args) {
        Ok(s) => s,
        Err(problems) => {
            eprint!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    let problems = settings.check_registry_files();
    if problems.is_empty() {
        println!(
            "ok: settings and {} registry path(s) are valid",
            settings.files.len()
        );
        // Valid, but perhaps not what was meant: said, not refused.
        for w in settings.analyze_registry_files() {
            println!("warning: {w}");
        }
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        ExitCode::FAILURE
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let settings = match Settings::resolve(args) {
        Ok(s) => s,
        Err(problems) => {
            eprint!("{problems}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sextant::logging::init(&settings.log_output_level) {
        eprintln!("error: logging: {e}");
        return ExitCode::from(2);
    }
    // A broken registry file at start-up is refused: serving without it
    // would push an incomplete view to every proxy. At run time, a broken
    // edit keeps the last good content instead (and shows on /debug/registryz).
    let file_problems = settings.check_registry_files();
    if !file_problems.is_empty() {
        for p in &file_problems {
            eprintln!("error: {p}");
        }
        eprintln!(
            "refusing to start with invalid registry files (`sextant check-config` shows the same)"
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let started = match settings.sextant().await {
            Ok(sextant) => sextant.start().await,
            Err(e) => Err(e),
        };
        match started {
            Ok(running) => {
                running.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn registration(args: &RegisterArgs) -> Result<sextant_etcd::register::Registration, Vec<String>> {
    use sextant_core::{Endpoint, Service};
    let mut problems = Vec::new();
    let mut service = Service::new(args.hostname.as_str());
    let mut endpoint = match args.address.parse() {
        Ok(address) => Some(Endpoint::new(address)),
        Err(e) => {
            problems.push(format!("--address: {e}"));
            None
        }
    };
    for p in &args.ports {
        match sextant_etcd::convert::port_arg(p) {
            Ok(port) => {
                if let Some(ep) = endpoint.as_mut() {
                    ep.ports.insert(port.name.clone(), port.port);
                }
                service.ports.push(port);
            }
            Err(e) => problems.push(format!("--port {e}")),
        }
    }
    for l in &args.labels {
        match (l.split_once('='), endpoint.as_mut()) {
            (Some((k, v)), Some(ep)) => {
                ep.labels.insert(k.to_owned(), v.to_owned());
            }
            (None, _) => problems.push(format!("--label {l:?} should be KEY=VALUE")),
            _ => {}
        }
    }
    let ttl =
        humantime::parse_duration(&args.ttl).map_err(|e| format!("--ttl {:?}: {e}", args.ttl));
    if let Err(e) = &ttl {
        problems.push(e.clone());
    }
    let Some(endpoint) = endpoint else {
        return Err(problems);
    };
    let check = Service {
        endpoints: vec![endpoint.clone()],
        ..service.clone()
    };
    if let Err(e) = check.validate() {
        problems.extend(e.0.iter().map(ToString::to_string));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let id = args.id.clone().unwrap_or_else(|| {
        let ports: Vec<String> = endpoint.ports.values().map(u32::to_string).collect();
        format!("{}-{}", args.address, ports.join("-"))
    });
    Ok(sextant_etcd::register::Registration {
        service,
        endpoint,
        id,
        ttl: ttl.unwrap_or_default(),
    })
}

fn etcd_register(args: &RegisterArgs) -> ExitCode {
    let mut problems = Vec::new();
    let config = args.etcd.config().map_err(|p| problems.extend(p.0)).ok();
    let reg = registration(args).map_err(|p| problems.extend(p)).ok();
    let (Some(config), Some(reg)) = (config, reg) else {
        for p in problems {
            eprintln!("error: {p}");
        }
        return ExitCode::from(2);
    };
    if let Err(e) = sextant::logging::init("default:info") {
        eprintln!("error: logging: {e}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sextant_etcd::register::run(
        &config,
        &reg,
        sextant::wait_for_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.chain());
            ExitCode::FAILURE
        }
    }
}
