//! Gateway API routes in the mesh (GAMMA: `parentRefs` naming a Service)
//! as Sextant's route rules: pure conversion, no I/O.
//!
//! A TCPRoute or TLSRoute (experimental channel, `v1alpha2`) whose parent
//! is a Service sends that Service's connections (a TLSRoute's: those
//! whose client hello names one of its `hostnames`, else the Service's own
//! name) to its backends, weighted per connection: the `tcp` or `tls`
//! routes of the Service's route rule. A backend refused for want of a
//! ReferenceGrant gets no connections (a connection cannot be answered
//! 500); a rule left with none is not served.
//!
//! An HTTPRoute (or GRPCRoute) whose parent is Service `reviews` routes the
//! requests sent to `reviews`: its rules become the route rule of
//! `reviews.NAMESPACE.svc.CLUSTER_DOMAIN`, in order. Weights of backendRefs
//! are relative in the Gateway API and percentages in Sextant: they are
//! scaled to sum to 100 (largest remainder, so 1:2 becomes 33/67). A
//! GRPCRoute's method match becomes a path match (`/SERVICE/METHOD`). A
//! parent's `port` limits the route to that port (a port match on each of
//! its matches).
//! An HTTPRoute or GRPCRoute whose parents are Gateways (of Sextant's
//! class, see `gateways.rs`) binds to them instead: its `hostnames` (none:
//! every name) are the names it serves at the gateway, its rules the same
//! routes (a route rule with `gateways`, see
//! [`sextant_core::rules::gateway`]). What Sextant does not serve (query
//! parameter matches, other parents, `sectionName`, filters it lacks) is
//! named in `unsupported`.
//!
//! A backend (or mirror) in another namespace than the route's is served
//! only where a `ReferenceGrant` in that namespace lets the route's kind
//! from the route's namespace refer to that Service ([`Grants`]); without
//! one it gets no traffic: its share of the requests is answered 500 (as
//! the Gateway API asks of a backend that cannot be used), the others keep
//! their weights, and the route's status says `RefNotPermitted`. Parents
//! are not checked. A route whose parents are Services of another
//! namespace is a GAMMA consumer route: it applies to the requests of the
//! proxies of its own namespace only (`exportTo: ["."]`), before the
//! Service owner's route (see `sextant-aggregate`'s rule choice); a route
//! whose parents are of its own namespace (a producer route) applies to
//! every caller. A route naming both kinds serves its producer parents
//! only and names the others in `unsupported`.
//!

use serde::Deserialize;
use serde_json::Value;

use sextant_core::rules::{
    Destination, Fault, FaultAbort, HeaderCondition, HeaderOperations, Headers, HttpMatch,
    HttpRoute, L4Match, Percent, PortSelector, Redirect, Rewrite, RouteDestination, StringMatch,
    TcpRoute, TlsMatch, TlsRoute,
};
use sextant_core::{Hostname, RouteRule, Rule};

use crate::convert::Mapping;
use crate::istio::Converted;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteSpec {
    #[serde(default)]
    parent_refs: Vec<ParentRef>,
    #[serde(default)]
    rules: Vec<RouteRuleSpec>,
    /// A TLSRoute's server names.
    #[serde(default)]
    hostnames: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ParentRef {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    section_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteRuleSpec {
    #[serde(default)]
    matches: Vec<Value>,
    #[serde(default)]
    filters: Vec<Value>,
    #[serde(default)]
    backend_refs: Vec<BackendRef>,
    #[serde(default)]
    timeouts: Option<Timeouts>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackendRef {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Timeouts {
    #[serde(default)]
    request: Option<String>,
}

/// Which route kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// `HTTPRoute`.
    Http,
    /// `GRPCRoute`.
    Grpc,
    /// `TCPRoute`.
    Tcp,
    /// `TLSRoute`.
    Tls,
}

impl RouteKind {
    /// The object kind, as a ReferenceGrant's `from` names it.
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tcp => "TCPRoute",
            RouteKind::Tls => "TLSRoute",
        }
    }

    /// The prefix of the rule names it gives (`httproute/NAME`).
    fn rule_prefix(self) -> &'static str {
        match self {
            RouteKind::Http => "httproute",
            RouteKind::Grpc => "grpcroute",
            RouteKind::Tcp => "tcproute",
            RouteKind::Tls => "tlsroute",
        }
    }
}

/// Relative weights as percentages summing to 100; `None` for all when
/// every weight is absent (an absent one among others counts as 1, the
/// Gateway API's default).
fn percentages(weights: &[Option<u32>]) -> Vec<Option<u32>> {
    if weights.iter().all(Option::is_none) {
        return weights.to_vec();
    }
    let shares: Vec<u64> = weights.iter().map(|w| u64::from(w.unwrap_or(1))).collect();
    sextant_core::rules::percentages(&shares)
        .into_iter()
        .map(Some)
        .collect()
}

fn string_match(kind: Option<&str>, value: &str, exact_default: bool) -> Option<StringMatch> {
    match kind {
        Some("Exact") => Some(StringMatch::Exact(value.to_owned())),
        Some("PathPrefix") => Some(StringMatch::Prefix(value.to_owned())),
        Some("RegularExpression") => Some(StringMatch::Regex(value.to_owned())),
        None if exact_default => Some(StringMatch::Exact(value.to_owned())),
        None => Some(StringMatch::Prefix(value.to_owned())),
        Some(_) => None,
    }
}

/// One match; `None` when it has a condition Sextant does not serve (such
/// as `queryParams`): without it the match would hold for more requests
/// than written, so it is not served at all.
fn convert_match(
    kind: RouteKind,
    m: &Value,
    at: &str,
    unsupported: &mut Vec<String>,
) -> Option<HttpMatch> {
    let mut out = HttpMatch::default();
    let mut lost = false;
    if let Some(obj) = m.as_object() {
        for key in obj.keys() {
            let known = match kind {
                RouteKind::Http => ["path", "headers", "method"].contains(&key.as_str()),
                RouteKind::Grpc => ["method", "headers"].contains(&key.as_str()),
                // TCP and TLS rules have no matches.
                RouteKind::Tcp | RouteKind::Tls => false,
            };
            if !known {
                unsupported.push(format!("{at}.{key} (the match is not served)"));
                lost = true;
            }
        }
    }
    if lost {
        return None;
    }
    match kind {
        RouteKind::Http => {
            if let Some(p) = m.get("path") {
                let value = p.get("value").and_then(Value::as_str).unwrap_or("/");
                out.uri = string_match(p.get("type").and_then(Value::as_str), value, false);
            }
            if let Some(method) = m.get("method").and_then(Value::as_str) {
                out.method = Some(StringMatch::Exact(method.to_owned()));
            }
        }
        RouteKind::Grpc => {
            if let Some(method) = m.get("method") {
                let service = method.get("service").and_then(Value::as_str);
                let name = method.get("method").and_then(Value::as_str);
                out.uri = match (service, name) {
                    (Some(s), Some(n)) => Some(StringMatch::Exact(format!("/{s}/{n}"))),
                    (Some(s), None) => Some(StringMatch::Prefix(format!("/{s}/"))),
                    (None, Some(n)) => Some(StringMatch::Regex(format!("/[^/]+/{n}"))),
                    (None, None) => None,
                };
            }
        }
        RouteKind::Tcp | RouteKind::Tls => {}
    }
    for h in m
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(value)) = (
            h.get("name").and_then(Value::as_str),
            h.get("value").and_then(Value::as_str),
        ) else {
            continue;
        };
        let cond = string_match(h.get("type").and_then(Value::as_str), value, true);
        out.headers
            .insert(name.to_ascii_lowercase(), HeaderCondition(cond));
    }
    Some(out)
}

fn header_ops(v: &Value) -> HeaderOperations {
    let pairs = |key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| {
                Some((
                    h.get("name")?.as_str()?.to_ascii_lowercase(),
                    h.get("value")?.as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    HeaderOperations {
        set: pairs("set"),
        add: pairs("add"),
        remove: v
            .get("remove")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_ascii_lowercase))
            .collect(),
    }
}

/// An HTTPRoute's or GRPCRoute's spec as the route rule of each Service
/// parent it names (one rule, bound to them all).
pub fn route(
    mapping: &Mapping,
    grants: &Grants,
    kind: RouteKind,
    namespace: &str,
    name: &str,
    spec: &Value,
) -> Result<Converted, String> {
    let spec: RouteSpec = serde_json::from_value(spec.clone()).map_err(|e| format!("spec: {e}"))?;
    if matches!(kind, RouteKind::Tcp | RouteKind::Tls) {
        return Ok(l4_route(mapping, grants, kind, namespace, name, &spec));
    }
    let mut unsupported = Vec::new();
    let Parents {
        hosts,
        port,
        consumer,
        gateways,
    } = parents(mapping, namespace, &spec, &mut unsupported);
    // At a Gateway, the names it answers (none: every name).
    let hosts = if hosts.is_empty() && !gateways.is_empty() {
        if spec.hostnames.is_empty() {
            vec![Hostname::new("*")]
        } else {
            spec.hostnames.iter().map(Hostname::new).collect()
        }
    } else {
        hosts
    };
    if hosts.is_empty() {
        return Ok(Converted {
            rule: None,
            unsupported,
        });
    }
    let mut http = Vec::new();
    for (i, r) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let mut route = HttpRoute {
            matches: r
                .matches
                .iter()
                .enumerate()
                .filter_map(|(j, m)| {
                    convert_match(kind, m, &format!("{at}.matches[{j}]"), &mut unsupported)
                })
                .collect(),
            ..Default::default()
        };
        // Every match had a condition that is not served: no match would
        // mean every request.
        if !r.matches.is_empty() && route.matches.is_empty() {
            unsupported.push(format!(
                "{at} (every match has a condition that is not served: the rule is not served)"
            ));
            continue;
        }
        if let Some(port) = port {
            if route.matches.is_empty() {
                route.matches.push(HttpMatch::default());
            }
            for m in &mut route.matches {
                m.port = Some(port);
            }
        }
        // Backends another namespace has not granted: their share of the
        // requests is answered 500, the rest keep their relative weights.
        let mut usable = Vec::new();
        let (mut refused_weight, mut total_weight) = (0u64, 0u64);
        for (j, b) in r.backend_refs.iter().enumerate() {
            if b.kind.as_deref().is_some_and(|k| k != "Service") {
                unsupported.push(format!("{at}.backendRefs[{j}] (kind {:?})", b.kind));
                continue;
            }
            let weight = u64::from(b.weight.unwrap_or(1));
            total_weight += weight;
            let bns = b.namespace.as_deref().unwrap_or(namespace);
            if grants.permits(kind, namespace, bns, &b.name) {
                usable.push(b);
            } else {
                refused_weight += weight;
                unsupported.push(format!(
                    "{at}.backendRefs[{j}] (Service {bns}/{}: no ReferenceGrant in {bns} lets {}s of {namespace} refer to it; its share is answered 500)",
                    b.name,
                    kind.name()
                ));
            }
        }
        let weights = percentages(&usable.iter().map(|b| b.weight).collect::<Vec<_>>());
        for (b, weight) in usable.iter().zip(weights) {
            route.route.push(RouteDestination {
                destination: Destination {
                    host: mapping.hostname(b.namespace.as_deref().unwrap_or(namespace), &b.name),
                    subset: None,
                    port: b.port.map(|number| PortSelector { number }),
                },
                weight,
            });
        }
        if refused_weight > 0 {
            let share = 100.0 * refused_weight as f64 / total_weight as f64;
            route.fault = Some(Fault {
                delay: None,
                abort: Some(FaultAbort {
                    http_status: Some(500),
                    grpc_status: None,
                    percentage: Some(Percent(share)),
                }),
            });
            if route.route.is_empty() {
                // Every backend refused: all of it is answered 500; the
                // parent stands as the destination no request reaches.
                if let Some(host) = hosts.first() {
                    route.route.push(RouteDestination {
                        destination: Destination::host(host.clone()),
                        weight: None,
                    });
                }
            }
        }
        for (j, f) in r.filters.iter().enumerate() {
            let fat = format!("{at}.filters[{j}]");
            match f.get("type").and_then(Value::as_str) {
                Some("RequestHeaderModifier") => {
                    let ops = header_ops(f.get("requestHeaderModifier").unwrap_or(&Value::Null));
                    route.headers.get_or_insert_with(Headers::default).request = Some(ops);
                }
                Some("ResponseHeaderModifier") => {
                    let ops = header_ops(f.get("responseHeaderModifier").unwrap_or(&Value::Null));
                    route.headers.get_or_insert_with(Headers::default).response = Some(ops);
                }
                Some("RequestMirror") => {
                    let b = f.get("requestMirror").and_then(|m| m.get("backendRef"));
                    match b.and_then(|b| b.get("name")).and_then(Value::as_str) {
                        Some(n) => {
                            let ns = b
                                .and_then(|b| b.get("namespace"))
                                .and_then(Value::as_str)
                                .unwrap_or(namespace);
                            if grants.permits(kind, namespace, ns, n) {
                                route.mirror = Some(Destination::host(mapping.hostname(ns, n)));
                            } else {
                                unsupported.push(format!(
                                    "{fat} (Service {ns}/{n}: no ReferenceGrant in {ns} lets {}s of {namespace} refer to it; not mirrored)",
                                    kind.name()
                                ));
                            }
                        }
                        None => unsupported.push(format!("{fat} (a mirror without a backendRef)")),
                    }
                }
                Some("URLRewrite") => {
                    let u = f.get("urlRewrite").unwrap_or(&Value::Null);
                    let path = u.get("path");
                    let prefix = path
                        .filter(|p| {
                            p.get("type").and_then(Value::as_str) == Some("ReplacePrefixMatch")
                        })
                        .and_then(|p| p.get("replacePrefixMatch"))
                        .and_then(Value::as_str);
                    if path.is_some() && prefix.is_none() {
                        unsupported
                            .push(format!("{fat}.urlRewrite.path (only ReplacePrefixMatch)"));
                    }
                    route.rewrite = Some(Rewrite {
                        uri: prefix.map(str::to_owned),
                        authority: u.get("hostname").and_then(Value::as_str).map(str::to_owned),
                    });
                }
                Some("RequestRedirect") => {
                    let rr = f.get("requestRedirect").unwrap_or(&Value::Null);
                    for key in ["scheme", "port"] {
                        if rr.get(key).is_some() {
                            unsupported.push(format!("{fat}.requestRedirect.{key}"));
                        }
                    }
                    route.redirect = Some(Redirect {
                        uri: rr
                            .get("path")
                            .and_then(|p| p.get("replaceFullPath"))
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        authority: rr
                            .get("hostname")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        redirect_code: rr
                            .get("statusCode")
                            .and_then(Value::as_u64)
                            .and_then(|c| u32::try_from(c).ok())
                            .or(Some(302)),
                    });
                    route.route.clear();
                }
                other => unsupported.push(format!("{fat} (type {other:?})")),
            }
        }
        if let Some(t) = r.timeouts.as_ref().and_then(|t| t.request.as_deref()) {
            match t.parse() {
                Ok(d) => route.timeout = Some(d),
                Err(e) => unsupported.push(format!("{at}.timeouts.request ({e})")),
            }
        }
        if route.route.is_empty() && route.redirect.is_none() {
            // No backends: Gateway API answers such requests with 500;
            // Sextant leaves the rule out rather than route them elsewhere.
            unsupported.push(format!("{at} (no Service backend: left out)"));
            continue;
        }
        http.push(route);
    }
    Ok(Converted {
        rule: Some(Rule::route(
            namespace,
            format!("{}/{name}", kind.rule_prefix()),
            RouteRule {
                hosts,
                http,
                export_to: export_of(consumer),
                gateways,
                ..Default::default()
            },
        )),
        unsupported,
    })
}

/// A TCPRoute's or TLSRoute's spec as the `tcp` or `tls` routes of the
/// route rule of each Service parent (see the module's text).
fn l4_route(
    mapping: &Mapping,
    grants: &Grants,
    kind: RouteKind,
    namespace: &str,
    name: &str,
    spec: &RouteSpec,
) -> Converted {
    let mut unsupported = Vec::new();
    let Parents {
        hosts,
        port,
        consumer,
        gateways,
    } = parents(mapping, namespace, spec, &mut unsupported);
    // At a Gateway: a TLSRoute takes the server names of its `hostnames`
    // (it needs some), a TCPRoute every connection of its listener.
    let hosts = if hosts.is_empty() && !gateways.is_empty() {
        match kind {
            RouteKind::Tls if spec.hostnames.is_empty() => {
                unsupported.push(
                    "spec.hostnames (a TLSRoute at a Gateway needs the server names it takes: not served)"
                        .into(),
                );
                Vec::new()
            }
            RouteKind::Tls => spec.hostnames.iter().map(Hostname::new).collect(),
            _ => vec![Hostname::new("*")],
        }
    } else {
        hosts
    };
    if hosts.is_empty() {
        return Converted {
            rule: None,
            unsupported,
        };
    }
    // A TLSRoute without hostnames: the connections naming its parents.
    let sni_hosts = if spec.hostnames.is_empty() {
        hosts.iter().map(|h| h.as_str().to_owned()).collect()
    } else {
        spec.hostnames.clone()
    };
    let mut rule = RouteRule {
        hosts,
        export_to: export_of(consumer),
        gateways,
        ..Default::default()
    };
    for (i, r) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let mut usable = Vec::new();
        for (j, b) in r.backend_refs.iter().enumerate() {
            let bns = b.namespace.as_deref().unwrap_or(namespace);
            if b.kind.as_deref().is_some_and(|k| k != "Service") {
                unsupported.push(format!("{at}.backendRefs[{j}] (kind {:?})", b.kind));
            } else if !grants.permits(kind, namespace, bns, &b.name) {
                unsupported.push(format!(
                    "{at}.backendRefs[{j}] (Service {bns}/{}: no ReferenceGrant in {bns} lets {}s of {namespace} refer to it; it gets no connections)",
                    b.name,
                    kind.name()
                ));
            } else {
                usable.push(b);
            }
        }
        if usable.is_empty() {
            unsupported.push(format!("{at} (no usable Service backend: left out)"));
            continue;
        }
        let weights = percentages(&usable.iter().map(|b| b.weight).collect::<Vec<_>>());
        let route: Vec<RouteDestination> = usable
            .iter()
            .zip(weights)
            .map(|(b, weight)| RouteDestination {
                destination: Destination {
                    host: mapping.hostname(b.namespace.as_deref().unwrap_or(namespace), &b.name),
                    subset: None,
                    port: b.port.map(|number| PortSelector { number }),
                },
                weight,
            })
            .collect();
        match kind {
            RouteKind::Tls => rule.tls.push(TlsRoute {
                matches: vec![TlsMatch {
                    sni_hosts: sni_hosts.clone(),
                    port,
                }],
                route,
            }),
            _ => rule.tcp.push(TcpRoute {
                matches: port
                    .map(|port| L4Match { port: Some(port) })
                    .into_iter()
                    .collect(),
                route,
            }),
        }
    }
    // Nothing left to serve: no rule (an empty one would be refused).
    let served = !rule.tcp.is_empty() || !rule.tls.is_empty();
    Converted {
        rule: served
            .then(|| Rule::route(namespace, format!("{}/{name}", kind.rule_prefix()), rule)),
        unsupported,
    }
}

/// The Service parents of a route; other parents are named in
/// `unsupported`.
fn parents(
    mapping: &Mapping,
    namespace: &str,
    spec: &RouteSpec,
    unsupported: &mut Vec<String>,
) -> Parents {
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    let mut own = Vec::new();
    let mut gateways = Vec::new();
    for (i, p) in spec.parent_refs.iter().enumerate() {
        let is_service = p.kind.as_deref() == Some("Service")
            && p.group
                .as_deref()
                .is_none_or(|g| g.is_empty() || g == "core");
        let is_gateway = p.kind.as_deref().is_none_or(|k| k == "Gateway")
            && p.group
                .as_deref()
                .is_none_or(|g| g == "gateway.networking.k8s.io");
        if is_gateway {
            // `sectionName` and `port` narrow it to those listeners.
            let pns = p.namespace.as_deref().unwrap_or(namespace);
            let section = p
                .section_name
                .as_deref()
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            let port = p.port.map(|n| format!(":{n}")).unwrap_or_default();
            gateways.push(format!("{pns}/{}{section}{port}", p.name));
            continue;
        }
        if !is_service {
            unsupported.push(format!(
                "spec.parentRefs[{i}] ({} {}: only Service parents are served)",
                p.kind.as_deref().unwrap_or("Gateway"),
                p.name
            ));
            continue;
        }
        ports.push(p.port);
        let pns = p.namespace.as_deref().unwrap_or(namespace);
        own.push(pns == namespace);
        hosts.push((i, mapping.hostname(pns, &p.name)));
    }
    // Producer parents (the route's own namespace) route every caller;
    // consumer parents (another namespace's Service) only the route's
    // own namespace's callers. One rule is one or the other.
    let consumer = !own.is_empty() && own.iter().all(|o| !o);
    if !consumer && own.iter().any(|o| !o) {
        for ((i, host), own) in hosts.iter().zip(&own) {
            if !own {
                unsupported.push(format!(
                    "spec.parentRefs[{i}] (Service {host} of another namespace beside one of the route's own: a consumer route and a producer route must be separate routes; not served)"
                ));
            }
        }
        hosts = hosts
            .into_iter()
            .zip(&own)
            .filter(|(_, o)| **o)
            .map(|(h, _)| h)
            .collect();
    }
    let hosts: Vec<Hostname> = hosts.into_iter().map(|(_, h)| h).collect();
    // A route is for Services (the mesh) or for Gateways (the edge): its
    // hosts are services in one case, names at the gateway in the other.
    if !hosts.is_empty() && !gateways.is_empty() {
        unsupported.push(
            "spec.parentRefs (Gateways beside Services: a route for the mesh and one for a Gateway must be separate routes; the Gateways are not served)".into(),
        );
        gateways.clear();
    }
    // A parent's port limits the route to requests sent to that port; one
    // rule holds one set of matches, so parents must agree on it.
    let port = match ports.split_first() {
        None => None,
        Some((first, rest)) if rest.iter().all(|p| p == first) => *first,
        Some(_) => {
            unsupported.push(
                "spec.parentRefs[*].port (parents name different ports: the route applies to every port)".into(),
            );
            None
        }
    };
    Parents {
        hosts,
        port,
        consumer,
        gateways,
    }
}

/// A route's Service parents.
struct Parents {
    /// As hostnames.
    hosts: Vec<Hostname>,
    /// The port they limit it to.
    port: Option<u32>,
    /// They are all of other namespaces: a GAMMA consumer route, for the
    /// proxies of the route's namespace only (`exportTo: ["."]`).
    consumer: bool,
    /// Its Gateway parents (`NAMESPACE/NAME`), when it has no Service
    /// parent: the route binds to them ([`sextant_core::rules::gateway`]).
    gateways: Vec<String>,
}

/// A consumer route's `exportTo`: its own namespace.
fn export_of(consumer: bool) -> Vec<String> {
    if consumer {
        vec![".".to_owned()]
    } else {
        Vec::new()
    }
}

#[cfg(feature = "client")]
pub(crate) mod credentials;
mod gateways;
mod grants;
pub mod ingress;
pub use gateways::gateway;
pub(crate) use gateways::served;
pub use grants::Grants;

#[cfg(test)]
mod tests;
