//! One registry file's text to services and traffic rules (`routes:`,
//! `policies:`), reporting every problem at once:
//! each with the file, a line, and the path of the value
//! (`services[1].endpoints[0].ports.nope`), so that `sextant check-config`
//! needs one run however many mistakes a file holds.
//!
//! How: the typed parse finds the first problem with its exact line and
//! column. When there is one, the document is read again as plain data and
//! every service, port and endpoint is decoded on its own, so that one bad
//! value does not hide the next; a syntax error leaves no structure to go
//! on, and is reported alone. Services that decode are validated, one
//! problem per line.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use sextant_core::entries::{ServiceEntry, WorkloadEntry};
use sextant_core::groups::WorkloadGroup;
use sextant_core::{
    Endpoint, PolicyEntry, RouteEntry, Rule, RuleKey, RuleProblems, ScopeEntry, Service,
    ServicePort, ValidationErrors,
    rules::{AuthzEntry, GatewayEntry, PeerAuthEntry, gateway::CredentialEntry},
};

use crate::error::FileError;
use crate::text::{MAX_NESTING, check_nesting, hostname_line, key_line};

/// The top level of a registry file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    services: Vec<Service>,
    #[serde(default)]
    routes: Vec<RouteEntry>,
    #[serde(default)]
    policies: Vec<PolicyEntry>,
    #[serde(default)]
    scopes: Vec<ScopeEntry>,
    #[serde(default, rename = "peerAuthentications")]
    peer_authentications: Vec<PeerAuthEntry>,
    #[serde(default, rename = "authorizationPolicies")]
    authorization_policies: Vec<AuthzEntry>,
    #[serde(default)]
    gateways: Vec<GatewayEntry>,
    #[serde(default)]
    credentials: Vec<CredentialEntry>,
    #[serde(default, rename = "serviceEntries")]
    service_entries: Vec<ServiceEntry>,
    #[serde(default, rename = "workloadEntries")]
    workload_entries: Vec<WorkloadEntry>,
    #[serde(default, rename = "workloadGroups")]
    workload_groups: Vec<WorkloadGroup>,
}

/// The top-level keys of a registry file.
const TOP_KEYS: [&str; 11] = [
    "services",
    "routes",
    "policies",
    "scopes",
    "peerAuthentications",
    "authorizationPolicies",
    "gateways",
    "credentials",
    "serviceEntries",
    "workloadEntries",
    "workloadGroups",
];

/// What one file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileContent {
    /// Its services.
    pub services: Vec<Service>,
    /// Its route rules and destination policies.
    pub rules: Vec<Rule>,
    /// Its ServiceEntries, each with the line of its item: they become
    /// services once every file is read (a selector may pick workloads
    /// of another file).
    pub service_entries: Vec<(usize, ServiceEntry)>,
    /// Its WorkloadEntries, likewise.
    pub workload_entries: Vec<(usize, WorkloadEntry)>,
    /// Its WorkloadGroups (templates of the entries VMs register), with
    /// their lines.
    pub workload_groups: Vec<(usize, WorkloadGroup)>,
}

impl FileContent {
    /// True when the file holds nothing.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.rules.is_empty()
            && self.service_entries.is_empty()
            && self.workload_entries.is_empty()
            && self.workload_groups.is_empty()
    }
}

/// Each item of the list `key` with its line.
fn lined<T>(text: &str, key: &str, items: Vec<T>) -> Vec<(usize, T)> {
    let lines = item_lines(text, key);
    items
        .into_iter()
        .enumerate()
        .map(|(i, t)| (lines.get(i).copied().unwrap_or(0), t))
        .collect()
}

/// The entries under `key`, as rules, each with the 1-based line of its
/// entry (0 when not found).
fn with_lines<E: Into<Rule>>(text: &str, key: &str, entries: Vec<E>) -> Vec<(usize, Rule)> {
    lined(text, key, entries)
        .into_iter()
        .map(|(line, e)| (line, e.into()))
        .collect()
}

/// The rules of a file, in file order: routes, policies, scopes, then
/// peer authentications.
fn rules_of(doc: RegistryFile, text: &str) -> (Vec<Service>, Vec<(usize, Rule)>) {
    let mut rules = with_lines(text, "routes", doc.routes);
    rules.extend(with_lines(text, "policies", doc.policies));
    rules.extend(with_lines(text, "scopes", doc.scopes));
    rules.extend(with_lines(
        text,
        "peerAuthentications",
        doc.peer_authentications,
    ));
    rules.extend(with_lines(
        text,
        "authorizationPolicies",
        doc.authorization_policies,
    ));
    rules.extend(with_lines(text, "gateways", doc.gateways));
    rules.extend(with_lines(text, "credentials", doc.credentials));
    (doc.services, rules)
}

/// Validation problems of rules, and keys defined twice in one file.
fn rule_problems(path: &Path, rules: &[(usize, Rule)]) -> Vec<(usize, FileError)> {
    let mut out = Vec::new();
    let mut seen: std::collections::BTreeMap<&RuleKey, usize> = Default::default();
    for (line, rule) in rules {
        if let Some(first) = seen.insert(&rule.key, *line) {
            out.push((
                *line,
                FileError::Parse {
                    path: path.to_owned(),
                    line: *line,
                    column: 1,
                    message: format!("{} is defined twice (first at line {first})", rule.key),
                },
            ));
        }
        if let Err(RuleProblems(problems)) = rule.validate() {
            for p in problems {
                out.push((
                    *line,
                    FileError::InvalidRule {
                        path: path.to_owned(),
                        line: *line,
                        problems: RuleProblems(vec![p]),
                    },
                ));
            }
        }
    }
    out
}

/// A decoding problem: where (a value path) and what.
struct Problem {
    at: String,
    message: String,
    line: usize,
    column: usize,
}

/// Strips serde's own " at line L column C" (the location is reported apart).
fn short(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned()
}

/// `prefix.path`, without a dangling dot for a path at the top.
fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty() || path == ".") {
        (_, true) => prefix.to_owned(),
        (true, false) => path.to_owned(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// `message` without a leading `at: ` (serde_yaml_ng prefixes its own).
fn unprefixed(at: &str, message: String) -> String {
    // serde_yaml_ng names the innermost mapping, which may be a parent of
    // `at` (the unknown field is not part of its own path).
    match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && at.starts_with(prefix) => rest.to_owned(),
        _ => message,
    }
}

/// The typed parse of the whole document, or its first problem with an
/// exact position and path.
fn typed(text: &str, json: bool) -> Result<RegistryFile, Problem> {
    if json {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| Problem {
            at: e.path().to_string(),
            message: short(&e.inner().to_string()),
            line: e.inner().line(),
            column: e.inner().column(),
        })
    } else {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let (line, column) = e
                .inner()
                .location()
                .map_or((0, 0), |l| (l.line(), l.column()));
            let at = e.path().to_string();
            Problem {
                message: unprefixed(&at, short(&e.inner().to_string())),
                at,
                line,
                column,
            }
        })
    }
}

/// Decodes `value` as `T`, the problem's path prefixed with `at`.
fn decode<T: DeserializeOwned>(value: &serde_json::Value, at: &str) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| (join(at, &e.path().to_string()), e.inner().to_string()))
}

/// The 1-based line of each block-style item of the top-level list `key`
/// (`services`, `routes`, `policies`), in order (empty for flow style and
/// JSON).
fn item_lines(text: &str, key: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let head = format!("{key}:");
    let Some(start) = lines.iter().position(|l| l.starts_with(&head)) else {
        return Vec::new();
    };
    let mut indent = None;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let here = line.len() - trimmed.len();
        if here == 0 && !trimmed.starts_with('-') {
            break;
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            match indent {
                None => {
                    indent = Some(here);
                    out.push(i + 1);
                }
                Some(n) if n == here => out.push(i + 1),
                _ => {}
            }
        }
    }
    out
}

/// The 1-based line of item `index` of the list `key` in the block-style
/// service starting at `service_line`: the item's own line in block style,
/// the `key:` line in flow style; `service_line` when not found.
fn element_line(text: &str, service_line: usize, key: &str, index: usize) -> usize {
    if service_line == 0 {
        return 0;
    }
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(first) = lines.get(service_line - 1) else {
        return service_line;
    };
    let item_indent = indent(first);
    let mut i = service_line;
    // Find `key:` inside this service.
    let at = loop {
        let Some(line) = lines.get(i) else {
            return service_line;
        };
        if !line.trim().is_empty() && indent(line) <= item_indent {
            return service_line;
        }
        if line.trim_start().starts_with(&format!("{key}:")) {
            break i;
        }
        i += 1;
    };
    let rest = lines[at].trim_start()[key.len() + 1..].trim();
    if !rest.is_empty() && !rest.starts_with('#') {
        return at + 1;
    }
    let key_indent = indent(lines[at]);
    let mut seen = 0;
    for (k, line) in lines.iter().enumerate().skip(at + 1) {
        if line.trim().is_empty() {
            continue;
        }
        if indent(line) < key_indent
            || (indent(line) == key_indent && !line.trim_start().starts_with('-'))
        {
            break;
        }
        if line.trim_start().starts_with('-') {
            if seen == index {
                return k + 1;
            }
            seen += 1;
        }
    }
    at + 1
}

/// Every problem of the rules in the list `key` of `top`, each entry
/// decoded on its own; the entries that decode.
fn rule_value_problems<T: DeserializeOwned>(
    top: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    text: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(usize, T)> {
    let mut decoded = Vec::new();
    let list = match top.get(key) {
        None | Some(serde_json::Value::Null) => return decoded,
        Some(serde_json::Value::Array(list)) => list,
        Some(_) => {
            problems.push(Problem {
                at: key.into(),
                message: format!("expected a list of {key}"),
                line: key_line(text, key),
                column: 1,
            });
            return decoded;
        }
    };
    let lines = item_lines(text, key);
    for (i, el) in list.iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(0);
        match decode::<T>(el, &format!("{key}[{i}]")) {
            Ok(v) => decoded.push((line, v)),
            Err((at, message)) => problems.push(Problem {
                at,
                message,
                line,
                column: 1,
            }),
        }
    }
    decoded
}

/// What the second reading found: its problems, and the services and rules
/// that decoded, each with its line.
type Decoded = (Vec<Problem>, Vec<(usize, Service)>, Vec<(usize, Rule)>);

/// Every problem of the services and rules in `value` (the document as
/// plain data).
fn value_problems(value: &serde_json::Value, text: &str) -> Decoded {
    let mut problems = Vec::new();
    let mut decoded = Vec::new();
    let starts = item_lines(text, "services");
    let Some(top) = value.as_object() else {
        problems.push(Problem {
            at: String::new(),
            message: "expected a mapping with `services`, `routes`, `policies`, `scopes`, `peerAuthentications`, `authorizationPolicies`, `gateways`, `credentials`, `serviceEntries`, `workloadEntries` or `workloadGroups`".into(),
            line: 1,
            column: 1,
        });
        return (problems, decoded, Vec::new());
    };
    for key in top.keys().filter(|k| !TOP_KEYS.contains(&k.as_str())) {
        problems.push(Problem {
            at: key.clone(),
            message: format!(
                "unknown field `{key}`, expected one of `services`, `routes`, `policies`, `scopes`, `peerAuthentications`, `authorizationPolicies`, `gateways`, `credentials`, `serviceEntries`, `workloadEntries`, `workloadGroups`"
            ),
            line: key_line(text, key),
            column: 1,
        });
    }
    let routes = rule_value_problems::<RouteEntry>(top, "routes", text, &mut problems);
    let policies = rule_value_problems::<PolicyEntry>(top, "policies", text, &mut problems);
    let scopes = rule_value_problems::<ScopeEntry>(top, "scopes", text, &mut problems);
    let peers =
        rule_value_problems::<PeerAuthEntry>(top, "peerAuthentications", text, &mut problems);
    let authz =
        rule_value_problems::<AuthzEntry>(top, "authorizationPolicies", text, &mut problems);
    let gateways = rule_value_problems::<GatewayEntry>(top, "gateways", text, &mut problems);
    let credentials =
        rule_value_problems::<CredentialEntry>(top, "credentials", text, &mut problems);
    // Entries are decoded for their problems only (the file is refused).
    rule_value_problems::<ServiceEntry>(top, "serviceEntries", text, &mut problems);
    rule_value_problems::<WorkloadEntry>(top, "workloadEntries", text, &mut problems);
    rule_value_problems::<WorkloadGroup>(top, "workloadGroups", text, &mut problems);
    let rules: Vec<(usize, Rule)> = routes
        .into_iter()
        .map(|(l, r)| (l, Rule::from(r)))
        .chain(policies.into_iter().map(|(l, p)| (l, Rule::from(p))))
        .chain(scopes.into_iter().map(|(l, p)| (l, Rule::from(p))))
        .chain(peers.into_iter().map(|(l, p)| (l, Rule::from(p))))
        .chain(authz.into_iter().map(|(l, p)| (l, Rule::from(p))))
        .chain(gateways.into_iter().map(|(l, p)| (l, Rule::from(p))))
        .chain(credentials.into_iter().map(|(l, p)| (l, Rule::from(p))))
        .collect();
    let services = match top.get("services") {
        None | Some(serde_json::Value::Null) => return (problems, decoded, rules),
        Some(serde_json::Value::Array(list)) => list,
        Some(_) => {
            problems.push(Problem {
                at: "services".into(),
                message: "expected a list of services".into(),
                line: key_line(text, "services"),
                column: 1,
            });
            return (problems, decoded, rules);
        }
    };
    for (i, s) in services.iter().enumerate() {
        let at = format!("services[{i}]");
        let line = starts.get(i).copied().unwrap_or_else(|| {
            s.get("hostname")
                .and_then(|h| h.as_str())
                .map_or(0, |h| hostname_line(text, h))
        });
        let mut reported: Vec<String> = Vec::new();
        // Each port and endpoint alone: one bad one does not hide the next.
        for (key, is_port) in [("ports", true), ("endpoints", false)] {
            let Some(list) = s.get(key).and_then(|v| v.as_array()) else {
                continue;
            };
            for (j, el) in list.iter().enumerate() {
                let el_at = format!("{at}.{key}[{j}]");
                let result = if is_port {
                    decode::<ServicePort>(el, &el_at).map(drop)
                } else {
                    decode::<Endpoint>(el, &el_at).map(drop)
                };
                if let Err((path, message)) = result {
                    problems.push(Problem {
                        at: path,
                        message,
                        line: element_line(text, line, key, j),
                        column: 1,
                    });
                    reported.push(el_at);
                }
            }
        }
        match decode::<Service>(s, &at) {
            Ok(service) => decoded.push((line, service)),
            Err((path, message)) => {
                if !reported
                    .iter()
                    .any(|r| path == *r || path.starts_with(&format!("{r}.")))
                {
                    problems.push(Problem {
                        at: path,
                        message,
                        line,
                        column: 1,
                    });
                }
            }
        }
    }
    (problems, decoded, rules)
}

/// One validation problem per line, located at its service.
fn invalid(path: &Path, line: usize, errors: ValidationErrors) -> Vec<FileError> {
    errors
        .0
        .into_iter()
        .map(|e| FileError::Invalid {
            path: path.to_owned(),
            line,
            errors: ValidationErrors(vec![e]),
        })
        .collect()
}

/// Parses and validates one file's text: JSON when the name ends in
/// `.json`, YAML otherwise. Every service and rule must be valid or the
/// whole file is refused, with every problem found.
pub fn parse_file(path: &Path, text: &str) -> Result<FileContent, Vec<FileError>> {
    if text.trim().is_empty() {
        return Ok(FileContent::default());
    }
    let json = path.extension().is_some_and(|e| e == "json");
    let parse_error = |line, column, message| FileError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
    };
    if !json && let Err((line, column)) = check_nesting(text) {
        let message = format!("nested deeper than {MAX_NESTING} levels");
        return Err(vec![parse_error(line, column, message)]);
    }
    let first = match typed(text, json) {
        Ok(mut doc) => {
            let mut problems: Vec<(usize, FileError)> = Vec::new();
            let service_entries = lined(
                text,
                "serviceEntries",
                std::mem::take(&mut doc.service_entries),
            );
            let workload_entries = lined(
                text,
                "workloadEntries",
                std::mem::take(&mut doc.workload_entries),
            );
            let workload_groups = lined(
                text,
                "workloadGroups",
                std::mem::take(&mut doc.workload_groups),
            );
            let (services, rules) = rules_of(doc, text);
            for service in &services {
                if let Err(errors) = service.validate() {
                    let line = hostname_line(text, &service.hostname);
                    problems.extend(invalid(path, line, errors).into_iter().map(|e| (line, e)));
                }
            }
            problems.extend(rule_problems(path, &rules));
            problems.sort_by_key(|(line, _)| *line);
            return if problems.is_empty() {
                Ok(FileContent {
                    services,
                    rules: rules.into_iter().map(|(_, r)| r).collect(),
                    service_entries,
                    workload_entries,
                    workload_groups,
                })
            } else {
                Err(problems.into_iter().map(|(_, e)| e).collect())
            };
        }
        Err(first) => first,
    };
    let value: Result<serde_json::Value, String> = if json {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    };
    let with_path = |p: &Problem| {
        if p.at.is_empty() {
            p.message.clone()
        } else {
            format!("{}: {}", p.at, p.message)
        }
    };
    let Ok(value) = value else {
        // A syntax error: nothing more to go on.
        return Err(vec![parse_error(
            first.line,
            first.column,
            with_path(&first),
        )]);
    };
    let (mut found, decoded, rules) = value_problems(&value, text);
    // The typed parse knows exactly where its problem is: it replaces what
    // the second reading found at or under the same path (the two decoders
    // may stop at different depths of one mistake).
    let same = |p: &Problem| {
        p.at == first.at
            || p.at.starts_with(&format!("{}[", first.at))
            || p.at.starts_with(&format!("{}.", first.at))
            || first.at.starts_with(&format!("{}.", p.at))
    };
    found.retain(|p| !same(p));
    found.push(first);
    let mut problems: Vec<(usize, FileError)> = found
        .iter()
        .map(|p| (p.line, parse_error(p.line, p.column, with_path(p))))
        .collect();
    for (line, service) in decoded {
        if let Err(errors) = service.validate() {
            problems.extend(invalid(path, line, errors).into_iter().map(|e| (line, e)));
        }
    }
    problems.extend(rule_problems(path, &rules));
    problems.sort_by_key(|(line, _)| *line);
    Err(problems.into_iter().map(|(_, e)| e).collect())
}
