//! `sextant status` and `sextant wait`, over each replica's
//! `/debug/syncz`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use super::{AdminTarget, columns, joined, json, query_value, s, short};

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
    /// snapshot, in detail, and each resource it holds at another version
    /// than the newest would give it.
    node: Option<String>,
}

/// One proxy's detail: per type what it acknowledged, what was sent, what
/// waits, what it rejected and why; whether it has looked at the newest
/// snapshot; and, from `diffs` (each replica's `/debug/proxydiff`), the
/// resources it holds at another version than the newest.
fn node_detail(
    node: &str,
    answers: &[(String, Value)],
    diffs: &BTreeMap<String, Result<Value, String>>,
) -> Result<String, String> {
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
            match diffs.get(addr) {
                Some(Ok(diff)) => out.push_str(&differences(diff)),
                Some(Err(e)) => out.push_str(&format!("  what it holds is not known: {e}\n")),
                None => {}
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

/// A `/debug/proxydiff` answer as lines: each resource held at another
/// version than the newest, or that the proxy holds the newest of all.
fn differences(diff: &Value) -> String {
    let types = diff["types"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let count = |key: &str| -> u64 {
        types
            .iter()
            .map(|t| match key {
                "differ" => {
                    t["differences"].as_array().map_or(0, |d| d.len() as u64)
                        + t["more"].as_u64().unwrap_or(0)
                }
                _ => t[key].as_u64().unwrap_or(0),
            })
            .sum()
    };
    let (same, differ) = (count("same"), count("differ"));
    if differ == 0 {
        return format!(
            "  holds the newest configuration: all {same} resources at the newest version (snapshot {})\n",
            diff["generation"]
        );
    }
    let mut rows = vec![
        ["TYPE", "NAME", "HELD", "NEWEST", ""]
            .map(String::from)
            .to_vec(),
    ];
    let version = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let mut more = 0;
    for t in types {
        more += t["more"].as_u64().unwrap_or(0);
        for d in t["differences"].as_array().into_iter().flatten() {
            let why = if d["rejected"] == true {
                "rejected (NACK): keeps the held version"
            } else if d["in_flight"] == true {
                "sent, not acknowledged yet"
            } else if d["held"].is_null() {
                "not held: would be added"
            } else if d["newest"].is_null() {
                "held: would be removed"
            } else {
                "held at an older version"
            };
            rows.push(vec![
                short(s(&t["type"])).to_owned(),
                s(&d["name"]).to_owned(),
                version(&d["held"]),
                version(&d["newest"]),
                why.to_owned(),
            ]);
        }
    }
    let mut out = format!(
        "  against the newest snapshot ({}): {differ} resources differ, {same} the same\n",
        diff["generation"]
    );
    for line in columns(&rows).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    if more > 0 {
        out.push_str(&format!("  and {more} more that differ\n"));
    }
    out
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
    let mut rows = vec![
        [
            "NODE", "REPLICA", "CLIENT", "CDS", "EDS", "LDS", "RDS", "SYNC",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut nacks = Vec::new();
    for (addr, a) in answers {
        let mut conns: Vec<&Value> = a["connections"].as_array().into_iter().flatten().collect();
        conns.sort_by_key(|c| s(&c["node_id"]).to_owned());
        for c in conns {
            let node = s(&c["node_id"]);
            let ua = s(&c["user_agent"]);
            rows.push(vec![
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
    let mut out = columns(&rows);
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
        // What it holds, from the replicas it is connected to.
        let mut diffs = BTreeMap::new();
        for (addr, a) in &answers {
            let here = a["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["node_id"] == node.as_str());
            if here {
                let path = format!("/debug/proxydiff?node={}", query_value(node));
                diffs.insert(addr.clone(), runtime.block_on(json(addr, &path, token)));
            }
        }
        return match node_detail(node, &answers, &diffs) {
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
