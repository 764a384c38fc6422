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
}

#[derive(Args)]
pub(crate) struct WaitArgs {
    #[command(flatten)]
    target: AdminTarget,
    /// What to wait for: `service/HOSTNAME`.
    #[arg(long = "for", value_name = "service/HOST")]
    what: String,
    /// Give up after this long (exit 1, naming the proxies that lag).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
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
        return Err(vec![format!("{host} is not in the mesh (yet)")]);
    };
    let mut held = 0;
    let mut lagging = Vec::new();
    for c in answer["connections"].as_array().into_iter().flatten() {
        // A connection that subscribed to nothing receives nothing.
        if c["types"].as_array().is_none_or(Vec::is_empty) {
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
    let Some(host) = args.what.strip_prefix("service/").filter(|h| !h.is_empty()) else {
        eprintln!(
            "error: --for {:?}: write service/HOSTNAME (the only kind served yet)",
            args.what
        );
        return ExitCode::from(2);
    };
    let token = args.target.admin_token.as_deref();
    let started = Instant::now();
    let path = format!("/debug/syncz?host={host}");
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
        if last.is_empty() {
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
