//! The operator's commands: `sextant status` (is every proxy holding the
//! newest configuration?) and `sextant wait` (block until every proxy
//! holds a service as Sextant knows it). Both read the admin port of each
//! replica (`/debug/syncz`), merge what the replicas say, and need nothing
//! but the address (and the admin token, when the server has one).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The replicas to ask.
#[derive(Args, Clone)]
pub(crate) struct AdminTarget {
    /// Sextant's admin address, HOST:PORT; repeat it (or separate with
    /// commas) for replicas: their proxies are shown in one table.
    #[arg(
        long = "admin-addr",
        env = "SEXTANT_ADMIN_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:15014"
    )]
    admin_addrs: Vec<String>,
    /// The server's admin token (its --admin-token), when it has one.
    #[arg(long, env = "SEXTANT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    target: AdminTarget,
    /// `table` (default) or `json` (each replica's answer).
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    /// Also print each replica's recent events (/debug/events).
    #[arg(long)]
    events: bool,
    /// One proxy (its node id): where each type stands against the newest
    /// snapshot, in detail.
    node: Option<String>,
}

/// One proxy's detail: per type what it acknowledged, what was sent, what
/// waits, what it rejected and why; and whether it has looked at the
/// newest snapshot.
fn node_detail(node: &str, answers: &[(String, Value)]) -> Result<String, String> {
    let mut out = String::new();
    let mut found = false;
    for (addr, a) in answers {
        let newest = &a["snapshot"];
        for c in a["connections"].as_array().into_iter().flatten() {
            if c["node_id"] != node {
                continue;
            }
            found = true;
            out.push_str(&format!(
                "{node} on {addr}: {}\n  looked at snapshot {} (newest {}), settled on view {} (newest {})\n",
                s(&c["sync"]),
                c["generation"],
                newest["generation"],
                c["settled_view_generation"],
                newest["view_generation"],
            ));
            let mut rows = vec![
                [
                    "TYPE",
                    "STATE",
                    "ACKED VERSION",
                    "SENT VERSION",
                    "HELD",
                    "RESPONSES",
                ]
                .map(String::from)
                .to_vec(),
            ];
            let mut rejected = Vec::new();
            for t in c["types"].as_array().into_iter().flatten() {
                rows.push(vec![
                    short(s(&t["type"])).to_owned(),
                    s(&t["state"]).to_owned(),
                    s(&t["acked_version"]).to_owned(),
                    s(&t["sent_version"]).to_owned(),
                    t["held"].to_string(),
                    t["responses"].to_string(),
                ]);
                if t["state"] == "NACKED" {
                    let names: Vec<String> = t["last_nack"]["resources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect();
                    rejected.push(format!(
                        "  {} version {} rejected: {}\n    resources it kept the old version of: {}\n",
                        short(s(&t["type"])),
                        s(&t["last_nack"]["version"]),
                        s(&t["last_nack"]["error"]),
                        joined(&names, ", ", "-")
                    ));
                }
            }
            for line in columns(&rows).lines() {
                out.push_str(&format!("  {line}\n"));
            }
            for r in rejected {
                out.push_str(&r);
            }
        }
    }
    if found {
        Ok(out)
    } else {
        Err(format!(
            "no proxy {node:?} is connected (sextant status lists them)"
        ))
    }
}

#[derive(Args)]
pub(crate) struct WaitArgs {
    #[command(flatten)]
    target: AdminTarget,
    /// What to wait for: `service/HOSTNAME`, or `rule/KIND/NAMESPACE/NAME`:
    /// a route rule or destination policy (`route`, `policy`: every host it
    /// binds to), or a per-proxy rule (`peer_authentication`,
    /// `authorization_policy`, `scope`: the proxies of its namespace).
    #[arg(long = "for", value_name = "service/HOST|rule/KIND/NS/NAME")]
    what: String,
    /// Give up after this long (exit 1, naming the proxies that lag).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Succeed no sooner than this: an edit made just before the wait is
    /// given this long to reach Sextant (a file edit takes about 0.3 s, a
    /// Kubernetes watch event tens of milliseconds). 0 when the caller
    /// knows Sextant has it.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    settle: Duration,
}

/// The largest answer read from an admin port.
const MAX_ANSWER: u64 = 64 << 20;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` on an admin port: the status and body, or why not.
async fn get(addr: &str, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let call = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;
        let auth = token.map_or(String::new(), |t| {
            format!("Authorization: Bearer {}\r\n", t.trim())
        });
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut raw = Vec::new();
        (&mut s)
            .take(MAX_ANSWER)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{addr} did not answer HTTP"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{addr} did not answer HTTP"))?;
        let chunked = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        Ok((
            status,
            if chunked {
                dechunk(body)
            } else {
                body.to_owned()
            },
        ))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| format!("{addr} did not answer within {REQUEST_TIMEOUT:?}"))?
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A JSON answer from `path` on `addr`.
async fn json(addr: &str, path: &str, token: Option<&str>) -> Result<Value, String> {
    match get(addr, path, token).await? {
        (200, body) => serde_json::from_str(&body).map_err(|e| format!("{addr}{path}: {e}")),
        (401, _) => Err(format!(
            "{addr} wants the admin token: --admin-token or SEXTANT_ADMIN_TOKEN"
        )),
        (status, body) => Err(format!("{addr}{path}: {status} {}", body.trim())),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `items` joined by `sep`, or `empty` when there are none.
fn joined(items: &[String], sep: &str, empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(sep)
    }
}

/// A JSON object of labels as `k=v` pairs.
fn label_pairs(v: &Value) -> Vec<String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect()
}

/// The short name of a type as /debug/syncz writes it (`Cluster`...).
fn short(kind: &str) -> &str {
    match kind {
        "Cluster" => "cds",
        "Endpoint" => "eds",
        "Listener" => "lds",
        "Route" => "rds",
        other => other,
    }
}

/// The state of `kind` (`cds`...) on connection `c`, as the table shows it
/// (`-`: not subscribed).
fn type_state(c: &Value, kind: &str) -> String {
    c["types"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| short(s(&t["type"])) == kind)
        .map_or_else(|| "-".to_owned(), |t| s(&t["state"]).replace('_', " "))
}

/// One row per proxy of every replica, and the NACKs worth reading.
fn table(answers: &[(String, Value)]) -> String {
    let mut rows = vec![[
        "NODE".to_owned(),
        "REPLICA".to_owned(),
        "CLIENT".to_owned(),
        "CDS".to_owned(),
        "EDS".to_owned(),
        "LDS".to_owned(),
        "RDS".to_owned(),
        "SYNC".to_owned(),
    ]];
    let mut nacks = Vec::new();
    for (addr, a) in answers {
        let mut conns: Vec<&Value> = a["connections"].as_array().into_iter().flatten().collect();
        conns.sort_by_key(|c| s(&c["node_id"]).to_owned());
        for c in conns {
            let node = s(&c["node_id"]);
            let ua = s(&c["user_agent"]);
            rows.push([
                if node.is_empty() {
                    "(no node yet)"
                } else {
                    node
                }
                .to_owned(),
                addr.clone(),
                if ua.is_empty() { s(&c["client"]) } else { ua }.to_owned(),
                type_state(c, "cds"),
                type_state(c, "eds"),
                type_state(c, "lds"),
                type_state(c, "rds"),
                s(&c["sync"]).to_owned(),
            ]);
            for t in c["types"].as_array().into_iter().flatten() {
                if t["state"] == "NACKED" {
                    nacks.push(format!(
                        "{node} ({addr}) rejected {} version {}: {}",
                        short(s(&t["type"])),
                        s(&t["last_nack"]["version"]),
                        s(&t["last_nack"]["error"])
                    ));
                }
            }
        }
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let (current, all) = answers
        .iter()
        .flat_map(|(_, a)| a["connections"].as_array().into_iter().flatten())
        .fold((0, 0), |(c, n), conn| {
            (c + usize::from(conn["sync"] == "CURRENT"), n + 1)
        });
    out.push_str(&format!(
        "\n{current} of {all} proxies CURRENT on {} replica(s)\n",
        answers.len()
    ));
    for n in nacks {
        out.push_str(&format!("{n}\n"));
    }
    out
}

pub(crate) fn status(args: &StatusArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let token = args.target.admin_token.as_deref();
    let mut answers = Vec::new();
    let mut failed = false;
    for addr in &args.target.admin_addrs {
        match runtime.block_on(json(addr, "/debug/syncz", token)) {
            Ok(v) => answers.push((addr.clone(), v)),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if let Some(node) = &args.node {
        return match node_detail(node, &answers) {
            Ok(text) => {
                print!("{text}");
                if failed {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.output == "json" {
        let merged: serde_json::Map<String, Value> = answers.iter().cloned().collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&merged).unwrap_or_default()
        );
    } else {
        print!("{}", table(&answers));
    }
    if args.events {
        for addr in &args.target.admin_addrs {
            match runtime.block_on(json(addr, "/debug/events", token)) {
                Ok(v) => {
                    println!("\nevents on {addr}:");
                    for e in v["events"].as_array().into_iter().flatten() {
                        println!(
                            "{:>6}  {}  {:<18}  {}  {}",
                            e["seq"],
                            s(&e["at"]),
                            s(&e["kind"]),
                            s(&e["subject"]),
                            s(&e["message"])
                        );
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What one replica says of the wait: `Ok(proxies that hold it)`, or the
/// proxies that lag (with their rejections).
fn judge(answer: &Value, host: &str) -> Result<usize, Vec<String>> {
    let Some(changed_in) = answer["host"]["changed_in"].as_u64() else {
        return Err(vec![format!(
            "{host} is not in the mesh (yet), or binds to no service"
        )]);
    };
    if answer["host"]["pushed"] != true {
        return Err(vec![format!("{host}'s change is not pushed yet")]);
    }
    // The proxies that should receive it (their scope shows it).
    let receivers: Vec<&str> = answer["host"]["receivers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut held = 0;
    let mut lagging = Vec::new();
    for c in answer["connections"].as_array().into_iter().flatten() {
        if !receivers.contains(&s(&c["node_id"])) {
            continue;
        }
        if c["settled_view_generation"].as_u64().unwrap_or(0) >= changed_in {
            held += 1;
            continue;
        }
        let why: Vec<String> = c["types"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["state"] != "SYNCED" && t["state"] != "NOT_SENT")
            .map(|t| match s(&t["state"]) {
                "NACKED" => format!(
                    "{} NACKED: {}",
                    short(s(&t["type"])),
                    s(&t["last_nack"]["error"])
                ),
                other => format!("{} {other}", short(s(&t["type"]))),
            })
            .collect();
        lagging.push(format!(
            "{}{}",
            s(&c["node_id"]),
            if why.is_empty() {
                " (not yet caught up)".to_owned()
            } else {
                format!(" ({})", why.join("; "))
            }
        ));
    }
    if lagging.is_empty() {
        Ok(held)
    } else {
        Err(lagging)
    }
}

pub(crate) fn wait(args: &WaitArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let (host, path) = if let Some(host) =
        args.what.strip_prefix("service/").filter(|h| !h.is_empty())
    {
        (host.to_owned(), format!("/debug/syncz?host={host}"))
    } else if let Some(rule) = args.what.strip_prefix("rule/") {
        let parts: Vec<&str> = rule.split('/').collect();
        let kind = match parts.first().map(|k| k.to_ascii_lowercase()).as_deref() {
            Some("route" | "virtualservice" | "httproute" | "grpcroute") => "route",
            Some("policy" | "destinationrule") => "policy",
            Some("peer_authentication" | "peerauthentication") => "peer_authentication",
            Some("authorization_policy" | "authorizationpolicy") => "authorization_policy",
            Some("scope" | "sidecar") => "scope",
            _ => "",
        };
        if parts.len() != 3 || kind.is_empty() || parts.iter().any(|p| p.is_empty()) {
            eprintln!(
                "error: --for {:?}: write rule/KIND/NAMESPACE/NAME, KIND one of route (VirtualService, HTTPRoute, GRPCRoute), policy (DestinationRule), peer_authentication, authorization_policy, scope (Sidecar)",
                args.what
            );
            return ExitCode::from(2);
        }
        (
            format!("{kind} {}/{}", parts[1], parts[2]),
            format!("/debug/syncz?rule={kind}/{}/{}", parts[1], parts[2]),
        )
    } else {
        eprintln!(
            "error: --for {:?}: write service/HOSTNAME or rule/KIND/NAMESPACE/NAME",
            args.what
        );
        return ExitCode::from(2);
    };
    let host = host.as_str();
    let token = args.target.admin_token.as_deref();
    let started = Instant::now();
    let mut last: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        last.clear();
        let mut held = 0;
        for addr in &args.target.admin_addrs {
            match runtime.block_on(json(addr, &path, token)) {
                Ok(v) => match judge(&v, host) {
                    Ok(n) => held += n,
                    Err(lagging) => {
                        last.insert(addr.clone(), lagging);
                    }
                },
                Err(e) => {
                    last.insert(addr.clone(), vec![e]);
                }
            }
        }
        if last.is_empty() && started.elapsed() >= args.settle.min(args.timeout) {
            println!(
                "{host}: held by all {held} proxies on {} replica(s) after {:.2} s",
                args.target.admin_addrs.len(),
                started.elapsed().as_secs_f64()
            );
            return ExitCode::SUCCESS;
        }
        if started.elapsed() >= args.timeout {
            eprintln!(
                "{host}: not held everywhere within {}:",
                humantime::format_duration(args.timeout)
            );
            for (addr, lagging) in &last {
                for l in lagging {
                    eprintln!("  {addr}: {l}");
                }
            }
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `proxy-config` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ConfigKind {
    /// Clusters: type, load balancer, TLS.
    Clusters,
    /// Endpoints of every assignment: address, health, locality, weight.
    Endpoints,
    /// Listeners: address, filter chains.
    Listeners,
    /// Routes: per virtual host, each match and where it goes.
    Routes,
    /// Secrets (Sextant serves none: certificates come from the agent).
    Secrets,
}

#[derive(Args)]
pub(crate) struct ProxyConfigArgs {
    /// The proxy's node id (as `sextant status` shows it).
    node: String,
    /// What to show.
    #[arg(value_enum)]
    kind: ConfigKind,
    /// Only the resource (cluster, assignment, listener or route
    /// configuration) of this name.
    #[arg(long)]
    name: Option<String>,
    /// `table` (default) or `json` (name, version and state per resource).
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    /// Sextant's xDS address, HOST:PORT (CSDS is served on both xDS
    /// ports).
    #[arg(long, env = "SEXTANT_XDS_ADDR", default_value = "127.0.0.1:15010")]
    xds_addr: String,
    /// The CA (PEM file) of Sextant's TLS port: connect over TLS (the
    /// mesh's root, `ROOT/root-cert.pem`, when Sextant's CA made the port's
    /// certificate).
    #[arg(long = "xds-ca", env = "SEXTANT_XDS_CA", value_name = "FILE")]
    xds_ca: Option<std::path::PathBuf>,
    /// The name the TLS port's certificate must carry [default: the
    /// address's host].
    #[arg(long, requires = "xds_ca")]
    server_name: Option<String>,
    /// A client certificate and its key (PEM files), for `--xds-auth mtls`.
    #[arg(long, requires_all = ["key", "xds_ca"])]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's key.
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// A bearer token file, when the server authenticates (--xds-auth):
    /// the node must be of the token's namespace.
    #[arg(long, env = "SEXTANT_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
}

/// The node's resources of one type, from CSDS: (name, version, config
/// status, the decoded bytes).
async fn csds_resources(
    args: &ProxyConfigArgs,
    type_url: &str,
) -> Result<Vec<(String, String, String, Vec<u8>)>, String> {
    use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::status::v3::{ClientStatusRequest, ConfigStatus};
    use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher, string_matcher};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let scheme = if args.xds_ca.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", args.xds_addr))
            .map_err(|e| format!("--xds-addr {}: {e}", args.xds_addr))?
            .connect_timeout(REQUEST_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
    if let Some(ca) = &args.xds_ca {
        let host = args.server_name.clone().unwrap_or_else(|| {
            args.xds_addr
                .rsplit_once(':')
                .map_or(args.xds_addr.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        });
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?))
            .domain_name(host);
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS settings: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.xds_addr))?;
    let mut client = ClientStatusDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_ANSWER as usize);
    let mut request = tonic::Request::new(ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(args.node.clone())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    if let Some(path) = &args.token_file {
        let token =
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| format!("{}: not a token", path.display()))?;
        request.metadata_mut().insert("authorization", value);
    }
    let answer = client
        .fetch_client_status(request)
        .await
        .map_err(|s| format!("CSDS at {}: {:?}: {}", args.xds_addr, s.code(), s.message()))?
        .into_inner();
    let Some(config) = answer.config.into_iter().next() else {
        return Err(format!(
            "no proxy {:?} is connected to {} (sextant status lists them)",
            args.node, args.xds_addr
        ));
    };
    Ok(config
        .generic_xds_configs
        .into_iter()
        .filter(|g| g.type_url == type_url)
        .filter(|g| args.name.as_ref().is_none_or(|n| *n == g.name))
        .map(|g| {
            let status = ConfigStatus::try_from(g.config_status)
                .map_or("UNKNOWN", |s| s.as_str_name())
                .to_owned();
            (
                g.name,
                g.version_info,
                status,
                g.xds_config.map(|a| a.value).unwrap_or_default(),
            )
        })
        .collect())
}

/// Rows as aligned columns.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn socket_address(a: Option<&envoy_types::pb::envoy::config::core::v3::Address>) -> String {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    match a.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => match &s.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) => format!("{}:{p}", s.address),
            _ => s.address.clone(),
        },
        Some(address::Address::Pipe(p)) => p.path.clone(),
        _ => "-".to_owned(),
    }
}

/// The table of `resources` (decoded as `kind` says).
fn config_table(kind: ConfigKind, resources: &[(String, String, String, Vec<u8>)]) -> String {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType, LbPolicy,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::{
        RouteConfiguration, route, route_action, route_match,
    };
    use prost::Message;
    let mut rows: Vec<Vec<String>> = Vec::new();
    match kind {
        ConfigKind::Clusters => {
            rows.push(
                ["CLUSTER", "TYPE", "LB", "TLS", "STATUS"]
                    .map(String::from)
                    .to_vec(),
            );
            for (name, _, status, bytes) in resources {
                let Ok(c) = Cluster::decode(bytes.as_slice()) else {
                    continue;
                };
                let kind = match c.cluster_discovery_type {
                    Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t)
                        .map_or("?", |t| t.as_str_name())
                        .to_owned(),
                    Some(ClusterDiscoveryType::ClusterType(t)) => t.name,
                    None => "STATIC".to_owned(),
                };
                let lb = LbPolicy::try_from(c.lb_policy).map_or("?", |l| l.as_str_name());
                let tls = if !c.transport_socket_matches.is_empty() {
                    format!("by endpoint ({} matches)", c.transport_socket_matches.len())
                } else if let Some(ts) = &c.transport_socket {
                    if ts.name.ends_with("raw_buffer") {
                        "plaintext"
                    } else {
                        "tls"
                    }
                    .to_owned()
                } else {
                    "-".to_owned()
                };
                rows.push(vec![name.clone(), kind, lb.to_owned(), tls, status.clone()]);
            }
        }
        ConfigKind::Endpoints => {
            rows.push(
                ["CLUSTER", "ENDPOINT", "HEALTH", "LOCALITY", "WEIGHT"]
                    .map(String::from)
                    .to_vec(),
            );
            for (name, _, _, bytes) in resources {
                let Ok(cla) = ClusterLoadAssignment::decode(bytes.as_slice()) else {
                    continue;
                };
                for group in &cla.endpoints {
                    let locality = group.locality.as_ref().map_or_else(
                        || "-".to_owned(),
                        |l| {
                            let parts: Vec<&str> = [&l.region, &l.zone, &l.sub_zone]
                                .into_iter()
                                .map(String::as_str)
                                .filter(|s| !s.is_empty())
                                .collect();
                            if parts.is_empty() {
                                "-".to_owned()
                            } else {
                                parts.join("/")
                            }
                        },
                    );
                    for lb in &group.lb_endpoints {
                        let addr = match &lb.host_identifier {
                            Some(lb_endpoint::HostIdentifier::Endpoint(e)) => {
                                socket_address(e.address.as_ref())
                            }
                            _ => "-".to_owned(),
                        };
                        let health =
                            envoy_types::pb::envoy::config::core::v3::HealthStatus::try_from(
                                lb.health_status,
                            )
                            .map_or("?", |h| h.as_str_name());
                        rows.push(vec![
                            name.clone(),
                            addr,
                            health.to_owned(),
                            locality.clone(),
                            lb.load_balancing_weight
                                .as_ref()
                                .map_or_else(|| "1".to_owned(), |w| w.value.to_string()),
                        ]);
                    }
                }
            }
        }
        ConfigKind::Listeners => {
            rows.push(
                ["LISTENER", "ADDRESS", "CHAINS", "STATUS"]
                    .map(String::from)
                    .to_vec(),
            );
            for (name, _, status, bytes) in resources {
                let Ok(l) = Listener::decode(bytes.as_slice()) else {
                    continue;
                };
                let chains = if l.api_listener.is_some() {
                    "api listener (proxyless gRPC)".to_owned()
                } else {
                    let names: Vec<&str> = l
                        .filter_chains
                        .iter()
                        .map(|c| {
                            if c.name.is_empty() {
                                "(unnamed)"
                            } else {
                                c.name.as_str()
                            }
                        })
                        .collect();
                    format!("{}: {}", names.len(), names.join(", "))
                };
                rows.push(vec![
                    name.clone(),
                    socket_address(l.address.as_ref()),
                    chains,
                    status.clone(),
                ]);
            }
        }
        ConfigKind::Routes => {
            rows.push(
                [
                    "ROUTE CONFIG",
                    "VIRTUAL HOST",
                    "DOMAINS",
                    "MATCH",
                    "DESTINATION",
                ]
                .map(String::from)
                .to_vec(),
            );
            for (name, _, _, bytes) in resources {
                let Ok(rc) = RouteConfiguration::decode(bytes.as_slice()) else {
                    continue;
                };
                for vh in &rc.virtual_hosts {
                    for r in &vh.routes {
                        let m = r.r#match.as_ref();
                        let mut matched = match m.and_then(|m| m.path_specifier.as_ref()) {
                            Some(route_match::PathSpecifier::Prefix(p)) => format!("prefix {p}"),
                            Some(route_match::PathSpecifier::Path(p)) => format!("path {p}"),
                            Some(route_match::PathSpecifier::SafeRegex(r)) => {
                                format!("regex {}", r.regex)
                            }
                            _ => "*".to_owned(),
                        };
                        let headers = m.map_or(0, |m| m.headers.len());
                        if headers > 0 {
                            matched.push_str(&format!(" + {headers} header(s)"));
                        }
                        let to = match &r.action {
                            Some(route::Action::Route(a)) => match &a.cluster_specifier {
                                Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
                                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w
                                    .clusters
                                    .iter()
                                    .map(|c| {
                                        format!(
                                            "{} {}",
                                            c.name,
                                            c.weight.as_ref().map_or(0, |w| w.value)
                                        )
                                    })
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                _ => "?".to_owned(),
                            },
                            Some(route::Action::DirectResponse(d)) => {
                                format!("direct {}", d.status)
                            }
                            Some(route::Action::Redirect(_)) => "redirect".to_owned(),
                            _ => "-".to_owned(),
                        };
                        rows.push(vec![
                            name.clone(),
                            vh.name.clone(),
                            vh.domains.join(","),
                            matched,
                            to,
                        ]);
                    }
                }
            }
        }
        ConfigKind::Secrets => {}
    }
    columns(&rows)
}

pub(crate) fn proxy_config(args: &ProxyConfigArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    if args.kind == ConfigKind::Secrets {
        println!(
            "Sextant sends no secrets: a sidecar's certificate and the mesh's root come from its agent over SDS (names `default` and `ROOTCA`); see the agent's /metrics for the certificate's expiry."
        );
        return ExitCode::SUCCESS;
    }
    let type_url = match args.kind {
        ConfigKind::Clusters => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        ConfigKind::Endpoints => {
            "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
        }
        ConfigKind::Listeners => "type.googleapis.com/envoy.config.listener.v3.Listener",
        ConfigKind::Routes | ConfigKind::Secrets => {
            "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
        }
    };
    let resources = match runtime.block_on(csds_resources(args, type_url)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.output == "json" {
        let rows: Vec<Value> = resources
            .iter()
            .map(|(name, version, status, _)| {
                serde_json::json!({ "name": name, "version": version, "status": status })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        print!("{}", config_table(args.kind, &resources));
    }
    ExitCode::SUCCESS
}

#[derive(Args)]
pub(crate) struct DescribeArgs {
    #[command(flatten)]
    target: AdminTarget,
    /// What to describe: `service/HOSTNAME`, or `pod NAMESPACE/NAME`.
    what: String,
    /// The pod, after `pod`: `NAMESPACE/NAME`.
    name: Option<String>,
}

/// The proxies of one pod, as each replica sees them.
fn describe_pod_text(pod: &str, replicas: &[(String, Value)]) -> Result<String, String> {
    let mut out = String::new();
    let mut found = 0;
    for (addr, sync) in replicas {
        for c in sync["pod"].as_array().into_iter().flatten() {
            found += 1;
            let id = &c["identity"];
            let list = |v: &Value| -> String {
                let items: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .collect();
                joined(&items, ", ", "-")
            };
            let labels = label_pairs(&id["labels"]);
            out.push_str(&format!("Proxy {} ({addr})\n", s(&c["node_id"])));
            let ua = s(&c["user_agent"]);
            out.push_str(&format!(
                "  Client:        {} ({}), {}\n",
                if ua.is_empty() { s(&c["client"]) } else { ua },
                s(&c["protocol"]),
                s(&c["sync"])
            ));
            out.push_str(&format!(
                "  Identity:      {}\n",
                c["peer"]["identity"].as_str().map_or_else(
                    || format!("none proved; claims namespace {}", s(&id["namespace"])),
                    |i| format!("{i} (proved)")
                )
            ));
            out.push_str(&format!(
                "  Workload:      {}; IPs {}; {}\n",
                joined(&labels, ",", "no labels"),
                list(&id["ips"]),
                s(&id["mode"]).to_lowercase()
            ));
            out.push_str(&format!("  Own services:  {}\n", list(&c["own_services"])));
            out.push_str(&format!(
                "  Scope:         {}\n",
                if c["scope"].is_null() {
                    "every host".to_owned()
                } else {
                    format!(
                        "{} ({} hosts)",
                        s(&c["scope"]["source"]),
                        c["scope"]["hosts"]
                    )
                }
            ));
            if !c["capture"].is_null() {
                out.push_str(&format!(
                    "  Inbound ports: {}\n",
                    list(&c["capture"]["inbound_ports"])
                ));
            }
            let pa = &c["peer_authentication"];
            let mut modes = vec![
                pa["mode"]
                    .as_str()
                    .map_or_else(|| "the server's default".to_owned(), str::to_owned),
            ];
            for (port, mode) in pa["ports"].as_object().into_iter().flatten() {
                modes.push(format!("port {port} {}", s(mode)));
            }
            out.push_str(&format!(
                "  Mutual TLS:    {} (from {})\n",
                modes.join("; "),
                list(&pa["from"])
            ));
            out.push_str(&format!(
                "  Authorization: {}\n",
                list(&c["authorization_policies"])
            ));
            let types: Vec<String> = c["types"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| format!("{} {}", short(s(&t["type"])), s(&t["state"])))
                .collect();
            out.push_str(&format!("  Types:         {}\n", types.join(", ")));
            for u in c["unhonoured"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "  Not honoured:  {}: {}: {}\n",
                    rule_key(&u["rule"]),
                    s(&u["feature"]),
                    s(&u["instead"])
                ));
            }
        }
    }
    if found == 0 {
        return Err(format!(
            "no proxy of pod {pod} is connected (its node id has the form TYPE~IP~NAME.NAMESPACE~...)"
        ));
    }
    Ok(format!("Pod {pod}: {found} proxy connection(s)\n{out}"))
}

fn rule_key(k: &Value) -> String {
    format!("{} {}/{}", s(&k["kind"]), s(&k["namespace"]), s(&k["name"]))
}

/// What the first replica says of a service, and every replica's proxies.
fn describe_text(host: &str, replicas: &[(String, Value, Value, Value)]) -> Result<String, String> {
    let Some((_, config, registries, _)) = replicas.first() else {
        return Err("no replica answered".into());
    };
    let Some(svc) = config["services"].get(host) else {
        return Err(format!("{host} is not in the mesh"));
    };
    let mut out = format!("Service {host} (namespace {})\n", s(&svc["namespace"]));
    let ports: Vec<String> = svc["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{} {}/{}", s(&p["name"]), p["port"], s(&p["protocol"])))
        .collect();
    out.push_str(&format!("Ports:      {}\n", ports.join(", ")));
    let origins: Vec<String> = svc["origins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|id| {
            let state = registries["registries"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["id"] == id && r["kind"] == "services")
                .map_or("unknown", |r| s(&r["state"]));
            format!("{id} ({state})")
        })
        .collect();
    out.push_str(&format!("From:       {}\n", origins.join(", ")));
    let endpoints: Vec<&Value> = svc["endpoints"].as_array().into_iter().flatten().collect();
    let healthy = endpoints
        .iter()
        .filter(|e| e["health"] == "HEALTHY")
        .count();
    out.push_str(&format!(
        "Endpoints:  {}, {healthy} healthy\n",
        endpoints.len()
    ));
    let mut rows = Vec::new();
    for e in &endpoints {
        let ports: Vec<String> = e["ports"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(n, p)| format!("{n}:{p}"))
            .collect();
        let loc = &e["locality"];
        let locality: Vec<String> = [&loc["region"], &loc["zone"], &loc["subzone"]]
            .into_iter()
            .map(s)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect();
        rows.push(vec![
            format!("  {}", s(&e["address"])),
            ports.join(","),
            s(&e["health"]).to_owned(),
            joined(&locality, "/", "-"),
            joined(&label_pairs(&e["labels"]), ",", "-"),
        ]);
    }
    out.push_str(&columns(&rows));
    let rules: Vec<String> = svc["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| rule_key(&r["key"]))
        .collect();
    out.push_str(&format!("Rules:      {}\n", joined(&rules, ", ", "none")));
    let conflicts: Vec<String> = registries["conflicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["hostname"] == host)
        .map(|c| {
            format!(
                "  {}: {} is served, {} disagrees: {}",
                s(&c["field"]),
                s(&c["winner"]),
                s(&c["other"]),
                s(&c["detail"])
            )
        })
        .collect();
    if conflicts.is_empty() {
        out.push_str("Conflicts:  none\n");
    } else {
        out.push_str("Conflicts:\n");
        for c in conflicts {
            out.push_str(&format!("{c}\n"));
        }
    }
    // The proxies of every replica that receive it, and what they cannot
    // honour of its rules.
    let mut receivers = Vec::new();
    let mut unhonoured = std::collections::BTreeSet::new();
    let mut current = 0;
    for (addr, _, _, sync) in replicas {
        let names: Vec<&str> = sync["host"]["receivers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for c in sync["connections"].as_array().into_iter().flatten() {
            if !names.contains(&s(&c["node_id"])) {
                continue;
            }
            current += usize::from(c["sync"] == "CURRENT");
            receivers.push(vec![
                format!("  {}", s(&c["node_id"])),
                addr.clone(),
                s(&c["user_agent"]).to_owned(),
                s(&c["sync"]).to_owned(),
            ]);
            for u in c["unhonoured"].as_array().into_iter().flatten() {
                if rules.contains(&rule_key(&u["rule"])) {
                    unhonoured.insert(format!(
                        "  {} ({}): {}: {}",
                        rule_key(&u["rule"]),
                        s(&u["client"]),
                        s(&u["feature"]),
                        s(&u["instead"])
                    ));
                }
            }
        }
    }
    out.push_str(&format!(
        "Proxies:    {} receive it on {} replica(s), {current} CURRENT\n",
        receivers.len(),
        replicas.len()
    ));
    out.push_str(&columns(&receivers));
    if !unhonoured.is_empty() {
        out.push_str("Not honoured by connected clients:\n");
        for u in unhonoured {
            out.push_str(&format!("{u}\n"));
        }
    }
    Ok(out)
}

pub(crate) fn describe(args: &DescribeArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let token = args.target.admin_token.as_deref();
    let pod = match (args.what.as_str(), &args.name) {
        ("pod", Some(name)) => Some(name.clone()),
        (what, None) => what.strip_prefix("pod/").map(str::to_owned),
        _ => None,
    };
    if let Some(pod) = pod {
        let mut replicas = Vec::new();
        for addr in &args.target.admin_addrs {
            match runtime.block_on(json(addr, &format!("/debug/syncz?pod={pod}"), token)) {
                Ok(v) => replicas.push((addr.clone(), v)),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        return match describe_pod_text(&pod, &replicas) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(host) = args.what.strip_prefix("service/").filter(|h| !h.is_empty()) else {
        eprintln!(
            "error: {:?}: write service/HOSTNAME or pod NAMESPACE/NAME",
            args.what
        );
        return ExitCode::from(2);
    };
    let mut replicas = Vec::new();
    for addr in &args.target.admin_addrs {
        let answers = runtime.block_on(async {
            Ok::<_, String>((
                json(addr, "/debug/configz", token).await?,
                json(addr, "/debug/registryz", token).await?,
                json(addr, &format!("/debug/syncz?host={host}"), token).await?,
            ))
        });
        match answers {
            Ok((c, r, y)) => replicas.push((addr.clone(), c, r, y)),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match describe_text(host, &replicas) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
