//! `sextant describe service/HOST` and `sextant describe pod NS/NAME`,
//! over each replica's admin port.

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::{AdminTarget, columns, joined, json, label_pairs, printed, rule_key, s, short};

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
    if let Some(export) = svc["exportTo"].as_array() {
        let to: Vec<&str> = export.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!(
            "Exported:   to {} only (proxies of other namespaces do not receive it)\n",
            to.join(", ")
        ));
    }
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
    // Namespaces whose proxies see other rules (exportTo, their own).
    let mut rules = rules;
    for v in svc["namespaced"].as_array().into_iter().flatten() {
        let namespaces: Vec<&str> = v["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let theirs: Vec<String> = v["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| rule_key(&r["key"]))
            .collect();
        out.push_str(&format!(
            "  for proxies of {}: {}\n",
            namespaces.join(", "),
            joined(&theirs, ", ", "none")
        ));
        rules.extend(theirs);
    }
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
        return printed(describe_pod_text(&pod, &replicas));
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
    printed(describe_text(host, &replicas))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules some namespaces' proxies see instead are listed under
    /// the service's own.
    #[test]
    fn namespaced_rules_are_listed_with_their_namespaces() {
        let config = serde_json::json!({"services": {"a.shop.svc": {
            "namespace": "shop", "ports": [], "origins": [],
            "rules": [{"key": {"kind": "route", "namespace": "shop", "name": "owner"}}],
            "namespaced": [{"namespaces": ["web", "x"], "rules": [
                {"key": {"kind": "route", "namespace": "web", "name": "mine"}}]}]}}});
        let replicas = vec![(
            "127.0.0.1:15014".to_owned(),
            config,
            serde_json::json!({"registries": []}),
            serde_json::json!({"connections": []}),
        )];
        let text = describe_text("a.shop.svc", &replicas).expect("described");
        assert!(
            text.contains(
                "Rules:      route shop/owner\n  for proxies of web, x: route web/mine\n"
            ),
            "{text}"
        );
    }

    /// A service exported to some namespaces says so; one exported
    /// everywhere (no `exportTo`) says nothing of it.
    #[test]
    fn a_restricted_service_names_the_namespaces_it_is_exported_to() {
        let config = |export: Value| {
            serde_json::json!({"services": {"a.shop.svc": {
                "namespace": "shop", "ports": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                "origins": [], "exportTo": export}}})
        };
        let replicas = |config: Value| {
            vec![(
                "127.0.0.1:15014".to_owned(),
                config,
                serde_json::json!({"registries": []}),
                serde_json::json!({"connections": []}),
            )]
        };
        let text = describe_text(
            "a.shop.svc",
            &replicas(config(serde_json::json!([".", "billing"]))),
        )
        .expect("described");
        assert!(text.contains("Exported:   to ., billing only"), "{text}");
        let text = describe_text("a.shop.svc", &replicas(config(Value::Null))).expect("described");
        assert!(!text.contains("Exported"), "{text}");
    }
}
