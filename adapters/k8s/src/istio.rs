//! Istio's VirtualService, DestinationRule and Sidecar
//! (`networking.istio.io`) and PeerAuthentication (`security.istio.io`) as
//! Sextant's rules: pure conversion, no I/O.
//!
//! Sextant's rule model uses Istio's field names, so a spec mostly carries
//! over as it is. What changes: short hostnames are expanded as Istio does
//! (`reviews` in namespace `default` is `reviews.default.svc.CLUSTER_DOMAIN`,
//! `reviews.other` is `reviews.other.svc.CLUSTER_DOMAIN`); and every field
//! Sextant does not implement (`corsPolicy`, `queryParams`, a TCP or TLS
//! match's `destinationSubnets` or `sourceLabels`,
//! a route's own `headers`, ...) is taken out and
//! named in [`Converted::unsupported`], so the rest of the object is served
//! and nothing is dropped in silence.

use serde::Deserialize;
use serde_json::Value;
use sextant_core::rules::scope::{EgressEntry, WorkloadSelector};
use sextant_core::rules::{HttpRoute, ScopeRule, Subset, TrafficPolicy};
use sextant_core::{DestinationPolicy, Hostname, RouteRule, Rule};

use crate::convert::Mapping;

/// A converted object and what of it Sextant does not serve.
#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    /// The rule; `None` when nothing of the object applies to the mesh (a
    /// VirtualService bound only to gateways).
    pub rule: Option<Rule>,
    /// The fields taken out, by path (`spec.http[0].corsPolicy`).
    pub unsupported: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VirtualServiceSpec {
    #[serde(default)]
    hosts: Vec<Hostname>,
    #[serde(default)]
    http: Vec<HttpRoute>,
    #[serde(default)]
    tcp: Vec<sextant_core::rules::TcpRoute>,
    #[serde(default)]
    tls: Vec<sextant_core::rules::TlsRoute>,
    #[serde(default)]
    export_to: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DestinationRuleSpec {
    host: Hostname,
    #[serde(default)]
    traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    subsets: Vec<Subset>,
    #[serde(default)]
    export_to: Vec<String>,
}

/// Istio's host expansion: a name without dots is in the object's
/// namespace; `name.namespace` is a service of that namespace; anything
/// longer is taken as written.
fn expand(mapping: &Mapping, namespace: &str, host: &str) -> String {
    match host.split('.').collect::<Vec<_>>().as_slice() {
        [name] => mapping.hostname(namespace, name).to_string(),
        [name, ns] => mapping.hostname(ns, name).to_string(),
        _ => host.to_owned(),
    }
}

/// Removes the object at `path` (serde_path_to_error's form, `a.b[2].c`)
/// plus `field` under it; false if the path does not lead anywhere.
fn remove_field(root: &mut Value, path: &str, field: &str) -> bool {
    let mut at = root;
    for segment in path.split('.').filter(|s| !s.is_empty() && *s != "?") {
        let (name, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            let Some(next) = at.get_mut(name) else {
                return false;
            };
            at = next;
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            let Some(next) = index.parse::<usize>().ok().and_then(|i| at.get_mut(i)) else {
                return false;
            };
            at = next;
        }
    }
    at.as_object_mut()
        .is_some_and(|m| m.remove(field).is_some())
}

/// Decodes `value` as `T`, taking out each field `T` does not know (at most
/// 256) and naming it, prefixed with `prefix`.
fn decode_leniently<T: serde::de::DeserializeOwned>(
    mut value: Value,
    prefix: &str,
    unsupported: &mut Vec<String>,
) -> Result<T, String> {
    for _ in 0..256 {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        let message = error.inner().to_string();
        let path = error.path().to_string();
        // The path of an unknown field ends at the field itself.
        let field = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let Some(field) = field else {
            return Err(format!("{prefix}.{path}: {message}"));
        };
        let parent = path
            .strip_suffix(&field)
            .map(|p| p.trim_end_matches('.'))
            .unwrap_or(&path)
            .to_owned();
        if !remove_field(&mut value, &parent, &field) {
            return Err(format!("{prefix}.{path}: {message}"));
        }
        let at = if parent.is_empty() || parent == "." {
            format!("{prefix}.{field}")
        } else {
            format!("{prefix}.{parent}.{field}")
        };
        unsupported.push(at);
    }
    Err(format!("{prefix}: too many fields Sextant does not know"))
}

/// A match that lost a condition Sextant does not serve (`queryParams`,
/// `sourceLabels`, ...) would hold for more requests than written: it is
/// taken out, and a route left without any of its matches is taken out
/// whole (no match would mean every request), each named in
/// `unsupported`. Narrower than written is safe; broader is not.
fn narrow_matches(rule: &mut RouteRule, unsupported: &mut Vec<String>) {
    // `spec.KIND[I].match[J].FIELD...`, as decode_leniently names them.
    let mut lost: std::collections::BTreeSet<(&'static str, usize, usize)> = Default::default();
    for u in unsupported.iter() {
        for kind in ["http", "tcp", "tls"] {
            let Some(rest) = u.strip_prefix(&format!("spec.{kind}[")) else {
                continue;
            };
            let Some((i, rest)) = rest.split_once("].match[") else {
                continue;
            };
            let Some((j, field)) = rest.split_once(']') else {
                continue;
            };
            // Not conditions: without them a match holds for no more
            // requests (`ignoreUriCase` left out makes it narrower).
            if [".statPrefix", ".ignoreUriCase"].contains(&field) {
                continue;
            }
            if let (Ok(i), Ok(j)) = (i.parse(), j.parse()) {
                lost.insert((kind, i, j));
            }
        }
    }
    let mut notes = Vec::new();
    let mut emptied: Vec<(&'static str, usize)> = Vec::new();
    // Last first: removing a match or a route shifts the later ones.
    for &(kind, i, j) in lost.iter().rev() {
        let left = match kind {
            "http" => rule.http.get_mut(i).map(|r| {
                (j < r.matches.len()).then(|| r.matches.remove(j));
                r.matches.len()
            }),
            "tcp" => rule.tcp.get_mut(i).map(|r| {
                (j < r.matches.len()).then(|| r.matches.remove(j));
                r.matches.len()
            }),
            _ => rule.tls.get_mut(i).map(|r| {
                (j < r.matches.len()).then(|| r.matches.remove(j));
                r.matches.len()
            }),
        };
        match left {
            Some(0) if !emptied.contains(&(kind, i)) => emptied.push((kind, i)),
            Some(0) => {}
            Some(_) => notes.push(format!(
                "spec.{kind}[{i}].match[{j}] (a condition of it is not served: the match is not served)"
            )),
            None => {}
        }
    }
    // `emptied` is in descending order of index per kind.
    for (kind, i) in emptied {
        match kind {
            "http" => drop(rule.http.remove(i)),
            "tcp" => drop(rule.tcp.remove(i)),
            _ => drop(rule.tls.remove(i)),
        }
        notes.push(format!(
            "spec.{kind}[{i}] (every match has a condition that is not served: the route is not served)"
        ));
    }
    notes.reverse();
    unsupported.extend(notes);
}

/// A VirtualService's spec as a route rule named after it.
pub fn virtual_service(
    mapping: &Mapping,
    namespace: &str,
    name: &str,
    spec: &Value,
) -> Result<Converted, String> {
    let mut spec = spec.clone();
    let mut unsupported = Vec::new();
    let map = spec.as_object_mut().ok_or("spec is not an object")?;
    // `gateways`: Istio Gateways (`NAME` of the VirtualService's namespace,
    // or `NAMESPACE/NAME`) and `mesh`, the sidecars; none means the mesh.
    let gateways: Vec<String> = match map.remove("gateways") {
        Some(g) => match g.as_array() {
            Some(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            None => {
                unsupported.push("spec.gateways (not a list: read as the mesh)".into());
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let for_mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
    let decoded: VirtualServiceSpec = decode_leniently(spec, "spec", &mut unsupported)?;
    let mut rule = RouteRule {
        hosts: decoded
            .hosts
            .iter()
            .map(|h| {
                // At a gateway only, a name with a dot (or a wildcard) is
                // the name requests carry; a bare name is a Service's.
                if !for_mesh && (h.contains('.') || h.contains('*')) {
                    Hostname::new(h)
                } else {
                    Hostname::new(expand(mapping, namespace, h))
                }
            })
            .collect(),
        http: decoded.http,
        tcp: decoded.tcp,
        tls: decoded.tls,
        export_to: decoded.export_to,
        gateways,
    };
    for d in rule.destinations_mut() {
        d.host = Hostname::new(expand(mapping, namespace, &d.host));
    }
    narrow_matches(&mut rule, &mut unsupported);
    Ok(Converted {
        rule: Some(Rule::route(namespace, name, rule)),
        unsupported,
    })
}

/// A DestinationRule's spec as a destination policy named after it.
pub fn destination_rule(
    mapping: &Mapping,
    namespace: &str,
    name: &str,
    spec: &Value,
) -> Result<Converted, String> {
    let mut spec = spec.clone();
    let mut unsupported = Vec::new();
    let map = spec.as_object_mut().ok_or("spec is not an object")?;
    if map.remove("workloadSelector").is_some() {
        unsupported.push("spec.workloadSelector (the policy applies to every proxy)".into());
    }
    let decoded: DestinationRuleSpec = decode_leniently(spec, "spec", &mut unsupported)?;
    let policy = DestinationPolicy {
        host: Hostname::new(expand(mapping, namespace, &decoded.host)),
        traffic_policy: decoded.traffic_policy,
        subsets: decoded.subsets,
        export_to: decoded.export_to,
    };
    Ok(Converted {
        rule: Some(Rule::policy(namespace, name, policy)),
        unsupported,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SidecarSpec {
    #[serde(default)]
    workload_selector: Option<WorkloadSelector>,
    #[serde(default)]
    egress: Vec<EgressEntry>,
    #[serde(default)]
    outbound_traffic_policy: Option<sextant_core::rules::OutboundTrafficPolicy>,
    #[serde(default)]
    ingress: Vec<sextant_core::rules::IngressListener>,
}

/// A Sidecar's egress hosts, workload selector, outbound traffic policy
/// and ingress listeners (port and default endpoint) as a scope rule named
/// after it. Its other parts (a listener's bind, capture mode, TLS and
/// connection pool, an egress listener's port, an egress proxy) are named
/// as not served. A Sidecar with none of egress, an outbound policy and
/// ingress gives no rule: the namespace's or the mesh's default applies,
/// as in Istio; one without egress keeps the default hosts.
pub fn sidecar(namespace: &str, name: &str, spec: &Value) -> Result<Converted, String> {
    let mut spec = spec.clone();
    let mut unsupported = Vec::new();
    let map = spec.as_object_mut().ok_or("spec is not an object")?;
    if let Some(Value::Object(policy)) = map.get_mut("outboundTrafficPolicy")
        && policy.remove("egressProxy").is_some()
    {
        unsupported.push("spec.outboundTrafficPolicy.egressProxy".into());
    }
    if map.remove("inboundConnectionPool").is_some() {
        unsupported.push("spec.inboundConnectionPool".into());
    }
    if let Some(Value::Array(ingress)) = map.get_mut("ingress") {
        for (i, l) in ingress.iter_mut().enumerate() {
            for field in ["bind", "captureMode", "tls", "connectionPool"] {
                if l.as_object_mut().and_then(|m| m.remove(field)).is_some() {
                    unsupported.push(format!("spec.ingress[{i}].{field}"));
                }
            }
            // A port's target port is Istio's own detail; what arrives is
            // delivered to the default endpoint.
            if let Some(port) = l.get_mut("port").and_then(Value::as_object_mut)
                && port.remove("targetPort").is_some()
            {
                unsupported.push(format!("spec.ingress[{i}].port.targetPort"));
            }
        }
    }
    if let Some(Value::Array(egress)) = map.get_mut("egress") {
        for (i, e) in egress.iter_mut().enumerate() {
            for field in ["port", "bind", "captureMode"] {
                if e.as_object_mut().and_then(|m| m.remove(field)).is_some() {
                    unsupported.push(format!("spec.egress[{i}].{field}"));
                }
            }
        }
    }
    let mut decoded: SidecarSpec = decode_leniently(spec, "spec", &mut unsupported)?;
    let outbound = decoded.outbound_traffic_policy.map(|p| p.mode);
    // A listener that cannot deliver (a unix socket) is left out; the
    // others are served.
    let mut i = 0;
    decoded.ingress.retain(|l| {
        let kept = match l.deliver() {
            Ok(_) => true,
            Err(e) => {
                unsupported.push(format!("spec.ingress[{i}] ({e})"));
                false
            }
        };
        i += 1;
        kept
    });
    if decoded.egress.is_empty() && outbound.is_none() && decoded.ingress.is_empty() {
        unsupported
            .push("spec.egress is absent: the namespace's or mesh's default scope applies".into());
        return Ok(Converted {
            rule: None,
            unsupported,
        });
    }
    // Without egress, the rule keeps the mesh's default hosts (an empty
    // list says so) and sets the outbound policy only.
    let scope = ScopeRule {
        workload_selector: decoded
            .workload_selector
            .map(|w| w.labels)
            .unwrap_or_default(),
        hosts: decoded.egress.into_iter().flat_map(|e| e.hosts).collect(),
        outbound,
        ingress: decoded.ingress,
    };
    Ok(Converted {
        rule: Some(Rule::scope(namespace, name, scope)),
        unsupported,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PeerAuthenticationSpec {
    #[serde(default)]
    selector: Option<sextant_core::rules::peer::LabelSelector>,
    #[serde(default)]
    mtls: Option<sextant_core::rules::peer::ModeEntry>,
    #[serde(default)]
    port_level_mtls: std::collections::BTreeMap<u32, sextant_core::rules::peer::ModeEntry>,
}

/// A PeerAuthentication (`security.istio.io`) as a peer authentication
/// rule named after it; unknown fields are named as not served.
pub fn peer_authentication(namespace: &str, name: &str, spec: &Value) -> Result<Converted, String> {
    let mut unsupported = Vec::new();
    let decoded: PeerAuthenticationSpec = decode_leniently(spec.clone(), "spec", &mut unsupported)?;
    let entry = sextant_core::rules::PeerAuthEntry {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        selector: decoded.selector,
        mtls: decoded.mtls,
        port_level_mtls: decoded.port_level_mtls,
    };
    Ok(Converted {
        rule: Some(Rule::from(entry)),
        unsupported,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthorizationPolicySpec {
    #[serde(default)]
    selector: Option<sextant_core::rules::peer::LabelSelector>,
    #[serde(default)]
    action: sextant_core::rules::AuthzAction,
    #[serde(default)]
    rules: Vec<sextant_core::rules::authz::AuthzMatch>,
}

/// An AuthorizationPolicy (`security.istio.io`) as an authorization rule
/// named after it. Unknown fields (`provider`, `targetRefs`, a source's
/// `requestPrincipals`, ...) are named as not served; the actions AUDIT and
/// CUSTOM make the object invalid (its last good form stays).
pub fn authorization_policy(
    namespace: &str,
    name: &str,
    spec: &Value,
) -> Result<Converted, String> {
    let mut unsupported = Vec::new();
    let decoded: AuthorizationPolicySpec =
        decode_leniently(spec.clone(), "spec", &mut unsupported)?;
    // A field taken out of a rule widens what the rule matches: more
    // refused under DENY (kept), more let through under ALLOW (so such an
    // ALLOW rule is dropped: it then matches nothing).
    let mut rules = decoded.rules;
    if decoded.action == sextant_core::rules::AuthzAction::Allow {
        let lost: std::collections::BTreeSet<usize> = unsupported
            .iter()
            .filter_map(|p| {
                let rest = p.strip_prefix("spec.rules[")?;
                rest[..rest.find(']')?].parse().ok()
            })
            .collect();
        for i in lost.iter().rev() {
            if *i < rules.len() {
                rules.remove(*i);
                unsupported.push(format!(
                    "spec.rules[{i}] (an ALLOW rule missing a part Sextant does not serve matches nothing)"
                ));
            }
        }
    }
    let entry = sextant_core::rules::AuthzEntry {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        selector: decoded.selector,
        action: decoded.action,
        rules,
    };
    Ok(Converted {
        rule: Some(Rule::from(entry)),
        unsupported,
    })
}

mod gateway;
pub use gateway::gateway as istio_gateway;

#[cfg(test)]
mod tests;
