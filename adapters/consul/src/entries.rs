//! Consul's L7 config entries as Sextant's rules: pure conversion, no I/O.
//!
//! Consul resolves a request to service `web` through a chain: the
//! `service-router` (routes by path, header, method), then the
//! `service-splitter` (weighted splits, to subsets or other services),
//! then the `service-resolver` (subsets by filter, default subset, connect
//! timeout, load balancer). Sextant has one route rule and one policy per
//! host, so for `web` (hostname from the adapter's [`Mapping`]):
//! - the route rule holds the router's routes in order, then a catch-all
//!   made of the splitter's splits (or the resolver's default subset);
//! - the policy holds the resolver's subsets and settings;
//! - a route or a split that sends to a service without naming a subset
//!   goes on through that service's own chain, as Consul's discovery chain
//!   does: its splitter's splits (flattened, weights multiplied), else its
//!   resolver's default subset ([`Chain`]). A loop of splitters is cut
//!   after 8 steps.
//!
//! Subset filters become label selectors on the instances' labels (the
//! adapter turns tags and meta into labels): `Service.Meta.KEY == "v"`,
//! `Service.Tags contains "t"` (a `k=v` tag is the label `k: v`, a plain
//! one the label `t` with an empty value), and `and` of those. Any other
//! filter the [`crate::filter`] language covers (`or`, `not`, `!=`, `in`,
//! node fields, ...) is evaluated by the services side on each instance,
//! which labels the passing ones [`subset_label`]; the subset selects that
//! label. A filter outside that language is named in `unsupported` and its
//! subset left out, never guessed.

use std::collections::BTreeMap;

use serde::Deserialize;
use sextant_core::rules::{
    ConnectionPool, ConsistentHash, Destination, Duration, HashCookie, HeaderCondition,
    HeaderOperations, Headers, HttpMatch, HttpRoute, LoadBalancer, Retries, Rewrite,
    RouteDestination, SimpleLb, StringMatch, Subset, TcpPool, TrafficPolicy,
};
use sextant_core::{DestinationPolicy, Labels, RouteRule, Rule};

use crate::filter::{self, Expr, subset_label};
use crate::mapping::Mapping;

/// The rules of one Consul service, and what of its entries Sextant does
/// not serve.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Converted {
    /// Its route rule, when it has a router, a splitter or a default subset.
    pub route: Option<Rule>,
    /// Its destination policy, when it has a resolver.
    pub policy: Option<Rule>,
    /// What was left out, by entry and field (`service-router web:
    /// Routes[0].Match.HTTP.QueryParam`).
    pub unsupported: Vec<String>,
}

/// Every service's splitter and resolver: where a request sent to a
/// service goes next.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chain<'a> {
    /// Splitters by service name.
    pub splitters: Option<&'a BTreeMap<String, Splitter>>,
    /// Resolvers by service name.
    pub resolvers: Option<&'a BTreeMap<String, Resolver>>,
}

impl Chain<'_> {
    /// Where a request to `service` naming no subset ends: `(service,
    /// subset, percent of the whole)`. Bounded: at most 8 splitters deep
    /// and [`MAX_CHAIN_ENDS`] ends (past either, the service itself).
    fn resolve(&self, service: &str, depth: u8) -> Vec<(String, Option<String>, f64)> {
        let mut budget = MAX_CHAIN_ENDS;
        let mut out = Vec::new();
        self.resolve_into(service, depth, 100.0, &mut budget, &mut out);
        out
    }

    fn resolve_into(
        &self,
        service: &str,
        depth: u8,
        share: f64,
        budget: &mut usize,
        out: &mut Vec<(String, Option<String>, f64)>,
    ) {
        let default_subset = || {
            self.resolvers
                .and_then(|r| r.get(service))
                .and_then(|r| r.default_subset.clone())
                .filter(|s| !s.is_empty())
        };
        let splitter = self
            .splitters
            .and_then(|s| s.get(service))
            .filter(|s| !s.splits.is_empty() && depth < 8 && s.splits.len() <= *budget);
        let Some(splitter) = splitter else {
            *budget = budget.saturating_sub(1);
            out.push((service.to_owned(), default_subset(), share));
            return;
        };
        for split in &splitter.splits {
            let target = split.service.as_deref().unwrap_or(service);
            let part = share * split.weight / 100.0;
            match (&split.service_subset, target == service) {
                (Some(subset), _) => {
                    *budget = budget.saturating_sub(1);
                    out.push((target.to_owned(), Some(subset.clone()), part));
                }
                (None, true) => {
                    *budget = budget.saturating_sub(1);
                    out.push((target.to_owned(), default_subset(), part));
                }
                (None, false) => self.resolve_into(target, depth + 1, part, budget, out),
            }
        }
    }
}

/// The most destinations one flattened chain gives (a splitter of many
/// splits to splitters of many splits would multiply them): as many as
/// one route may hold.
pub const MAX_CHAIN_ENDS: usize = sextant_core::rules::check::MAX_PER_ROUTE;

/// `service-router`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Router {
    /// The routes, in order.
    #[serde(default)]
    pub routes: Vec<RouterRoute>,
}

/// One route of a router.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouterRoute {
    /// When it applies.
    #[serde(default, rename = "Match")]
    pub matches: Option<RouterMatch>,
    /// Where to.
    #[serde(default)]
    pub destination: Option<RouterDestination>,
}

/// A route's match.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RouterMatch {
    /// The HTTP conditions.
    #[serde(default, rename = "HTTP")]
    pub http: Option<serde_json::Value>,
}

/// A route's destination.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouterDestination {
    /// Another service (default: this one).
    #[serde(default)]
    pub service: Option<String>,
    /// A subset of it.
    #[serde(default)]
    pub service_subset: Option<String>,
    /// Replaces the matched path prefix.
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    /// The request's timeout.
    #[serde(default)]
    pub request_timeout: Option<String>,
    /// Retries.
    #[serde(default)]
    pub num_retries: Option<u32>,
    /// Retry connection failures.
    #[serde(default)]
    pub retry_on_connect_failure: Option<bool>,
    /// Retry these statuses.
    #[serde(default)]
    pub retry_on_status_codes: Vec<u32>,
    /// Request header changes.
    #[serde(default)]
    pub request_headers: Option<serde_json::Value>,
    /// Response header changes.
    #[serde(default)]
    pub response_headers: Option<serde_json::Value>,
}

/// `service-splitter`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Splitter {
    /// The splits.
    #[serde(default)]
    pub splits: Vec<Split>,
}

/// One split.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Split {
    /// Its share, in percent (up to two decimals).
    pub weight: f64,
    /// Another service (default: this one).
    #[serde(default)]
    pub service: Option<String>,
    /// A subset.
    #[serde(default)]
    pub service_subset: Option<String>,
}

/// `service-resolver`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resolver {
    /// The subset that gets requests naming none.
    #[serde(default)]
    pub default_subset: Option<String>,
    /// Subsets by name.
    #[serde(default)]
    pub subsets: BTreeMap<String, ResolverSubset>,
    /// The connect timeout.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// The load balancer.
    #[serde(default)]
    pub load_balancer: Option<serde_json::Value>,
    /// Redirect, failover and others: named as unsupported.
    #[serde(default)]
    pub redirect: Option<serde_json::Value>,
    /// Failover targets.
    #[serde(default)]
    pub failover: Option<serde_json::Value>,
}

/// One subset of a resolver.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResolverSubset {
    /// Consul's filter expression over the instance.
    #[serde(default)]
    pub filter: String,
    /// Only instances passing every check (Sextant serves only healthy
    /// endpoints anyway).
    #[serde(default)]
    pub only_passing: bool,
}

/// The subsets of `resolver` whose filters the services side evaluates
/// (those that are not plain label selectors), parsed.
pub fn evaluated_subsets(resolver: &Resolver) -> Vec<(String, Expr)> {
    resolver
        .subsets
        .iter()
        .filter(|(_, s)| filter_labels(&s.filter).is_err())
        .filter_map(|(name, s)| Some((name.clone(), filter::parse(&s.filter).ok()?)))
        .collect()
}

/// A subset filter as labels, or why it cannot be one.
pub fn filter_labels(filter: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    if filter.trim().is_empty() {
        return Ok(labels);
    }
    for term in filter.split(" and ") {
        let term = term
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        let unquote = |s: &str| s.trim().trim_matches('"').trim_matches('`').to_owned();
        if term.contains(" or ") || term.starts_with("not ") || term.contains("!=") {
            return Err(format!(
                "{filter:?}: or, not and != cannot be label selectors"
            ));
        }
        if let Some((lhs, rhs)) = term.split_once("==") {
            let Some(key) = lhs.trim().strip_prefix("Service.Meta.") else {
                return Err(format!(
                    "{filter:?}: only Service.Meta.KEY == value and Service.Tags contains value"
                ));
            };
            labels.insert(key.trim().to_owned(), unquote(rhs));
        } else if let Some((lhs, rhs)) = term.split_once(" contains ") {
            if lhs.trim() != "Service.Tags" {
                return Err(format!("{filter:?}: only Service.Tags contains a value"));
            }
            let tag = unquote(rhs);
            match tag.split_once('=') {
                Some((k, v)) => labels.insert(k.to_owned(), v.to_owned()),
                None => labels.insert(tag, String::new()),
            };
        } else {
            return Err(format!("{filter:?}: not a form Sextant evaluates"));
        }
    }
    Ok(labels)
}

fn duration(value: &str, at: &str, unsupported: &mut Vec<String>) -> Option<Duration> {
    match value.parse() {
        Ok(d) => Some(d),
        Err(e) => {
            unsupported.push(format!("{at} ({e})"));
            None
        }
    }
}

fn header_ops(v: &serde_json::Value) -> HeaderOperations {
    let map = |key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    HeaderOperations {
        set: map("Set"),
        add: map("Add"),
        remove: v
            .get("Remove")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_ascii_lowercase))
            .collect(),
    }
}

fn router_match(http: &serde_json::Value, at: &str, unsupported: &mut Vec<String>) -> HttpMatch {
    let mut m = HttpMatch::default();
    let s = |k: &str| {
        http.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    m.uri = s("PathExact")
        .map(StringMatch::Exact)
        .or_else(|| s("PathPrefix").map(StringMatch::Prefix))
        .or_else(|| s("PathRegex").map(StringMatch::Regex));
    for (i, h) in http
        .get("Header")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(name) = h.get("Name").and_then(serde_json::Value::as_str) else {
            continue;
        };
        let v = |k: &str| {
            h.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let cond = v("Exact")
            .map(StringMatch::Exact)
            .or_else(|| v("Prefix").map(StringMatch::Prefix))
            .or_else(|| v("Regex").map(StringMatch::Regex));
        if v("Suffix").is_some() {
            unsupported.push(format!("{at}.Header[{i}].Suffix"));
            continue;
        }
        let invert = h.get("Invert").and_then(serde_json::Value::as_bool) == Some(true);
        let target = if invert {
            &mut m.without_headers
        } else {
            &mut m.headers
        };
        target.insert(name.to_ascii_lowercase(), HeaderCondition(cond));
    }
    let methods: Vec<&str> = http
        .get("Methods")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    m.method = match methods.as_slice() {
        [] => None,
        [one] => Some(StringMatch::Exact((*one).to_owned())),
        many => Some(StringMatch::Regex(many.join("|"))),
    };
    if http.get("QueryParam").is_some() {
        unsupported.push(format!("{at}.QueryParam"));
    }
    m
}

/// The rules for Consul service `name` from its entries (each optional).
pub fn convert(
    mapping: &Mapping,
    name: &str,
    router: Option<&Router>,
    splitter: Option<&Splitter>,
    resolver: Option<&Resolver>,
    chain: Chain<'_>,
) -> Result<Converted, String> {
    let host = mapping.hostname(name)?;
    // A destination naming another service and no subset: that service's
    // chain, as weighted destinations.
    let onward = |service: &str| -> Result<Vec<RouteDestination>, String> {
        let ends = chain.resolve(service, 0);
        let weights = percentages(&ends.iter().map(|(_, _, w)| *w).collect::<Vec<_>>());
        let single = ends.len() == 1;
        ends.into_iter()
            .zip(weights)
            .filter(|(_, w)| single || *w > 0)
            .map(|((s, subset, _), w)| {
                Ok(RouteDestination {
                    destination: Destination {
                        host: mapping.hostname(&s)?,
                        subset,
                        port: None,
                    },
                    weight: (!single).then_some(w),
                })
            })
            .collect()
    };
    let to = |service: Option<&str>, subset: Option<&str>| -> Result<Destination, String> {
        Ok(Destination {
            host: mapping.hostname(service.unwrap_or(name))?,
            subset: subset.filter(|s| !s.is_empty()).map(str::to_owned),
            port: None,
        })
    };
    let mut out = Converted::default();
    let mut http = Vec::new();
    for (i, r) in router
        .map(|r| &r.routes[..])
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let at = format!("service-router {name}: Routes[{i}]");
        let mut route = HttpRoute::default();
        if let Some(h) = r.matches.as_ref().and_then(|m| m.http.as_ref()) {
            route.matches.push(router_match(
                h,
                &format!("{at}.Match.HTTP"),
                &mut out.unsupported,
            ));
        }
        let d = r.destination.clone().unwrap_or_default();
        match (d.service.as_deref(), d.service_subset.as_deref()) {
            (Some(other), None | Some("")) if other != name => route.route = onward(other)?,
            (service, subset) => route.route.push(RouteDestination {
                destination: to(service, subset)?,
                weight: None,
            }),
        }
        if let Some(p) = &d.prefix_rewrite {
            route.rewrite = Some(Rewrite {
                uri: Some(p.clone()),
                authority: None,
            });
        }
        if let Some(t) = &d.request_timeout {
            route.timeout = duration(
                t,
                &format!("{at}.Destination.RequestTimeout"),
                &mut out.unsupported,
            );
        }
        let mut retry_on: Vec<String> = Vec::new();
        if d.retry_on_connect_failure == Some(true) {
            retry_on.push("connect-failure".into());
        }
        retry_on.extend(d.retry_on_status_codes.iter().map(u32::to_string));
        if d.num_retries.is_some() || !retry_on.is_empty() {
            route.retries = Some(Retries {
                attempts: d.num_retries.unwrap_or(1),
                per_try_timeout: None,
                retry_on: (!retry_on.is_empty()).then(|| retry_on.join(",")),
            });
        }
        if d.request_headers.is_some() || d.response_headers.is_some() {
            route.headers = Some(Headers {
                request: d.request_headers.as_ref().map(header_ops),
                response: d.response_headers.as_ref().map(header_ops),
            });
        }
        http.push(route);
    }
    // The catch-all: the splitter's splits, else the default subset.
    let default_subset = resolver.and_then(|r| r.default_subset.as_deref());
    if let Some(s) = splitter.filter(|s| !s.splits.is_empty()) {
        // Splits to another service without a subset go on through its
        // chain: flattened, weights multiplied.
        let mut ends: Vec<(String, Option<String>, f64)> = Vec::new();
        for split in &s.splits {
            match (split.service.as_deref(), split.service_subset.as_deref()) {
                (Some(other), None) if other != name => ends.extend(
                    chain
                        .resolve(other, 1)
                        .into_iter()
                        .map(|(s, sub, w)| (s, sub, w * split.weight / 100.0)),
                ),
                (service, subset) => {
                    let subset = match (subset, service) {
                        (Some(sub), _) => Some(sub.to_owned()),
                        (None, None) => default_subset.map(str::to_owned),
                        (None, Some(_)) => None,
                    };
                    ends.push((service.unwrap_or(name).to_owned(), subset, split.weight));
                }
            }
        }
        let weights = percentages(&ends.iter().map(|(_, _, w)| *w).collect::<Vec<_>>());
        let mut route = HttpRoute::default();
        for ((service, subset, _), weight) in ends.iter().zip(weights) {
            route.route.push(RouteDestination {
                destination: to(Some(service.as_str()), subset.as_deref())?,
                weight: Some(weight),
            });
        }
        http.push(route);
    } else if let Some(subset) = default_subset {
        http.push(HttpRoute {
            route: vec![RouteDestination {
                destination: to(None, Some(subset))?,
                weight: None,
            }],
            ..Default::default()
        });
    }
    if !http.is_empty() {
        out.route = Some(Rule::route(
            "default",
            name,
            RouteRule {
                hosts: vec![host.clone()],
                http,
                ..Default::default()
            },
        ));
    }
    if let Some(r) = resolver {
        let at = format!("service-resolver {name}");
        if r.redirect.is_some() {
            out.unsupported.push(format!("{at}: Redirect"));
        }
        if r.failover.is_some() {
            out.unsupported.push(format!("{at}: Failover"));
        }
        let mut subsets = Vec::new();
        for (subset, s) in &r.subsets {
            // A filter that is not a label selector is evaluated by the
            // services side on each instance, which labels the passing ones.
            let labels = filter_labels(&s.filter).or_else(|_| {
                filter::parse(&s.filter)
                    .map(|_| Labels::from([(subset_label(subset), "true".to_owned())]))
            });
            match labels {
                Ok(labels) => subsets.push(Subset {
                    name: subset.clone(),
                    labels,
                    traffic_policy: None,
                }),
                Err(e) => out.unsupported.push(format!(
                    "{at}: Subsets.{subset}.Filter {:?}: {e}; the subset is left out",
                    s.filter
                )),
            }
        }
        let mut policy = TrafficPolicy::default();
        if let Some(t) = &r.connect_timeout
            && let Some(d) = duration(t, &format!("{at}: ConnectTimeout"), &mut out.unsupported)
        {
            policy.connection_pool = Some(ConnectionPool {
                tcp: Some(TcpPool {
                    max_connections: None,
                    connect_timeout: Some(d),
                }),
                http: None,
            });
        }
        if let Some(lb) = &r.load_balancer {
            policy.load_balancer = load_balancer(lb, &at, &mut out.unsupported);
        }
        let traffic_policy = (policy != TrafficPolicy::default()).then_some(policy);
        out.policy = Some(Rule::policy(
            "default",
            name,
            DestinationPolicy {
                host,
                traffic_policy,
                subsets,
                export_to: Vec::new(),
            },
        ));
    }
    Ok(out)
}

fn load_balancer(
    lb: &serde_json::Value,
    at: &str,
    unsupported: &mut Vec<String>,
) -> Option<LoadBalancer> {
    let policy = lb
        .get("Policy")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let simple = |s| {
        Some(LoadBalancer {
            simple: Some(s),
            consistent_hash: None,
        })
    };
    match policy {
        "" | "round_robin" => simple(SimpleLb::RoundRobin),
        "least_request" => simple(SimpleLb::LeastRequest),
        "random" => simple(SimpleLb::Random),
        "ring_hash" | "maglev" => {
            if policy == "maglev" {
                unsupported.push(format!(
                    "{at}: LoadBalancer.Policy maglev (ring hash instead)"
                ));
            }
            let first = lb
                .get("HashPolicies")
                .and_then(serde_json::Value::as_array)
                .and_then(|a| a.first());
            let mut hash = ConsistentHash::default();
            match first {
                Some(h) if h.get("SourceIP").and_then(serde_json::Value::as_bool) == Some(true) => {
                    hash.use_source_ip = Some(true);
                }
                Some(h) => {
                    let value = h
                        .get("FieldValue")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("");
                    match h.get("Field").and_then(serde_json::Value::as_str) {
                        Some("header") => hash.http_header_name = Some(value.to_ascii_lowercase()),
                        Some("cookie") => {
                            hash.http_cookie = Some(HashCookie {
                                name: value.to_owned(),
                                path: None,
                                ttl: None,
                            })
                        }
                        other => {
                            unsupported.push(format!(
                                "{at}: LoadBalancer.HashPolicies[0].Field {other:?}"
                            ));
                            return None;
                        }
                    }
                }
                None => {
                    unsupported.push(format!("{at}: LoadBalancer ring hash without HashPolicies"));
                    return None;
                }
            }
            if let Some(n) = lb
                .get("RingHashConfig")
                .and_then(|c| c.get("MinimumRingSize"))
                .and_then(serde_json::Value::as_u64)
            {
                hash.minimum_ring_size = Some(n);
            }
            Some(LoadBalancer {
                simple: None,
                consistent_hash: Some(hash),
            })
        }
        other => {
            unsupported.push(format!("{at}: LoadBalancer.Policy {other:?}"));
            None
        }
    }
}

/// Percentages with decimals as whole percentages summing to 100: Consul
/// allows two decimals, Sextant whole numbers.
fn percentages(weights: &[f64]) -> Vec<u32> {
    let hundredths: Vec<u64> = weights
        .iter()
        .map(|w| (w.max(0.0) * 100.0).round() as u64)
        .collect();
    sextant_core::rules::percentages(&hundredths)
}

#[cfg(test)]
mod tests;
