//! Route rules as Envoy routes, and destination policies as cluster
//! settings, for Envoy and for proxyless gRPC clients.
//!
//! One rule serves two kinds of client. Envoy implements nearly all of
//! it. A gRPC client ignores, without a word, what it does not implement,
//! and NACKs a response that carries a value it cannot take (an LB policy
//! it does not know). So every translation takes the [`Client`] it is for:
//! gRPC clients never receive what would make them NACK, and each feature
//! of a rule that a kind of client cannot honour is returned as an
//! [`Unhonoured`], for the debug pages and metrics.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{self, LbPolicy};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier, circuit_breakers,
};
use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RedirectAction, RetryPolicy, Route, RouteAction, RouteMatch, WeightedCluster,
    header_matcher, redirect_action, route, route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value, UInt64Value};
use sextant_core::rules::{
    self, DestinationPolicy, EffectivePolicy, GRPC_RETRY_ON, HttpRoute, RouteRule, SimpleLb,
    StringMatch,
};
use sextant_core::{MeshService, RuleKey, ServicePort};

use super::*;

mod l4;
pub(super) use l4::{l4_targets, tcp_proxy_to, weighted_tcp_proxy};

/// The kind of client a resource is translated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Client {
    /// Envoy (and clients that do not say what they are).
    Envoy,
    /// A proxyless gRPC client (any language).
    Grpc,
}

impl Client {
    /// The kind, from the node's `user_agent_name`: gRPC libraries send
    /// `gRPC Go`, `gRPC Java`, `gRPC C-core`, `gRPC Node`...; Envoy sends
    /// `envoy`. Anything else is treated as Envoy, as before client kinds.
    pub fn from_user_agent(name: &str) -> Client {
        // Bytes, not a str slice: a user agent is the client's to write, and
        // slicing one at a byte that is not a char boundary panicked (found
        // by fuzzing: `grp` followed by a two-byte character).
        if name
            .as_bytes()
            .get(..4)
            .is_some_and(|b| b.eq_ignore_ascii_case(b"grpc"))
        {
            Client::Grpc
        } else {
            Client::Envoy
        }
    }

    /// `envoy` or `grpc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Client::Envoy => "envoy",
            Client::Grpc => "grpc",
        }
    }
}

/// A feature of a rule that a kind of client does not implement: it is
/// left out of what that client receives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Unhonoured {
    /// The rule.
    pub rule: RuleKey,
    /// The feature, by its field (`mirror`, `loadBalancer.simple: RANDOM`).
    pub feature: String,
    /// The kind of client.
    pub client: Client,
    /// What the client does instead.
    pub instead: String,
}

pub(super) const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub(super) const FAULT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

/// `outbound|PORT|SUBSET|HOSTNAME`, Istio's subset cluster naming.
pub fn subset_cluster_name(hostname: &str, port: u32, subset: &str) -> String {
    format!("outbound|{port}|{subset}|{hostname}")
}

fn pb_duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A percentage as Envoy's fraction of a million.
fn fraction(p: Option<rules::Percent>) -> FractionalPercent {
    let p = p.map_or(100.0, |p| p.0).clamp(0.0, 100.0);
    FractionalPercent {
        numerator: (p * 10_000.0).round() as u32,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

fn string_matcher(m: &StringMatch) -> StringMatcher {
    let pattern = match m {
        StringMatch::Exact(v) => string_matcher::MatchPattern::Exact(v.clone()),
        StringMatch::Prefix(v) => string_matcher::MatchPattern::Prefix(v.clone()),
        StringMatch::Regex(v) => string_matcher::MatchPattern::SafeRegex(regex(v)),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

fn regex(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.to_owned(),
        ..Default::default()
    }
}

fn header_matcher(name: &str, cond: &rules::HeaderCondition, invert: bool) -> HeaderMatcher {
    let spec = match &cond.0 {
        None => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
        Some(m) => header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(m)),
    };
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    }
}

fn route_match(m: Option<&rules::HttpMatch>) -> RouteMatch {
    let Some(m) = m else {
        return RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
            ..Default::default()
        };
    };
    let path = match &m.uri {
        None => route_match::PathSpecifier::Prefix("/".to_owned()),
        Some(StringMatch::Exact(p)) => route_match::PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => route_match::PathSpecifier::SafeRegex(regex(r)),
    };
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|(n, c)| header_matcher(n, c, false))
        .chain(
            m.without_headers
                .iter()
                .map(|(n, c)| header_matcher(n, c, true)),
        )
        .collect();
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".to_owned(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(method),
            )),
            ..Default::default()
        });
    }
    RouteMatch {
        path_specifier: Some(path),
        headers,
        ..Default::default()
    }
}

fn header_options(ops: &rules::HeaderOperations) -> Vec<HeaderValueOption> {
    let one = |(k, v): (&String, &String), action: header_value_option::HeaderAppendAction| {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        }
    };
    ops.set
        .iter()
        .map(|kv| {
            one(
                kv,
                header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        })
        .chain(ops.add.iter().map(|kv| {
            one(
                kv,
                header_value_option::HeaderAppendAction::AppendIfExistsOrAdd,
            )
        }))
        .collect()
}

/// The cluster a destination names, on `port` when it gives none.
/// The cluster of destination `d` for a request or connection that came
/// in on `port` of `ms`: the destination's port when it names one, else the
/// destination host's only port when it has exactly one (Istio's rule),
/// else `port`.
fn destination_cluster(ms: &MeshService, d: &rules::Destination, port: u32) -> String {
    let port = d
        .port
        .map(|p| p.number)
        .or_else(|| ms.destination_ports.get(&d.host).copied())
        .unwrap_or(port);
    match &d.subset {
        Some(s) => subset_cluster_name(&d.host, port, s),
        None => cluster_name(&d.host, port),
    }
}

/// Translates one service's route rule for one of its ports.
pub(super) struct RuleRoutes<'a> {
    pub(super) ms: &'a MeshService,
    pub(super) port: &'a ServicePort,
    pub(super) client: Client,
    pub(super) notes: &'a mut Vec<Unhonoured>,
}

impl RuleRoutes<'_> {
    fn note(&mut self, rule: &RuleKey, feature: impl Into<String>, instead: impl Into<String>) {
        let n = Unhonoured {
            rule: rule.clone(),
            feature: feature.into(),
            client: self.client,
            instead: instead.into(),
        };
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    /// The rule's routes that apply to this port, in rule order (one Envoy
    /// route per match of each rule route), then the default route.
    pub(super) fn routes(mut self) -> Vec<Route> {
        let mut out = Vec::new();
        if let Some((rule, route_rule)) = self.ms.route_rule() {
            let key = rule.key.clone();
            self.rule_routes(&key, route_rule, &mut out);
        }
        out.push(self.default_route());
        out
    }

    /// The rule's routes that apply to this port, without the default
    /// route (a gateway has no service of its own to fall back to).
    pub(super) fn rule_routes_only(mut self) -> Vec<Route> {
        let mut out = Vec::new();
        if let Some((rule, route_rule)) = self.ms.route_rule() {
            let key = rule.key.clone();
            self.rule_routes(&key, route_rule, &mut out);
        }
        out
    }

    fn rule_routes(&mut self, key: &RuleKey, rule: &RouteRule, out: &mut Vec<Route>) {
        for (i, r) in rule.http.iter().enumerate() {
            let matches: Vec<Option<&rules::HttpMatch>> = if r.matches.is_empty() {
                vec![None]
            } else {
                r.matches
                    .iter()
                    .filter(|m| m.port.is_none_or(|p| p == self.port.port))
                    .map(Some)
                    .collect()
            };
            if matches.is_empty() {
                continue;
            }
            let Some(template) = self.route(key, i, r) else {
                continue;
            };
            for m in matches {
                let mut route = template.clone();
                route.r#match = Some(route_match(m));
                out.push(route);
            }
        }
    }

    fn route(&mut self, key: &RuleKey, index: usize, r: &HttpRoute) -> Option<Route> {
        let grpc = self.client == Client::Grpc;
        let at = format!("http[{index}]");
        let mut route = Route {
            name: r
                .name
                .clone()
                .unwrap_or_else(|| format!("{}/{}#{index}", key.namespace, key.name)),
            ..Default::default()
        };
        if let Some(redirect) = &r.redirect {
            if grpc {
                self.note(
                    key,
                    format!("{at}.redirect"),
                    "the route is left out; its requests fall through to the next route",
                );
                return None;
            }
            let code = match redirect.redirect_code.unwrap_or(301) {
                302 => redirect_action::RedirectResponseCode::Found,
                303 => redirect_action::RedirectResponseCode::SeeOther,
                307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
                308 => redirect_action::RedirectResponseCode::PermanentRedirect,
                _ => redirect_action::RedirectResponseCode::MovedPermanently,
            };
            route.action = Some(route::Action::Redirect(RedirectAction {
                host_redirect: redirect.authority.clone().unwrap_or_default(),
                path_rewrite_specifier: redirect
                    .uri
                    .clone()
                    .map(redirect_action::PathRewriteSpecifier::PathRedirect),
                response_code: code as i32,
                ..Default::default()
            }));
        } else {
            route.action = Some(route::Action::Route(self.action(key, &at, r)));
        }
        if let Some(h) = &r.headers {
            if grpc {
                self.note(key, format!("{at}.headers"), "headers are sent unchanged");
            } else {
                if let Some(req) = &h.request {
                    route.request_headers_to_add = header_options(req);
                    route.request_headers_to_remove = req.remove.clone();
                }
                if let Some(resp) = &h.response {
                    route.response_headers_to_add = header_options(resp);
                    route.response_headers_to_remove = resp.remove.clone();
                }
            }
        }
        if let Some(fault) = &r.fault {
            let config = HttpFault {
                delay: fault.delay.as_ref().map(|d| FaultDelay {
                    percentage: Some(fraction(d.percentage)),
                    fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(
                        pb_duration(d.fixed_delay.0),
                    )),
                }),
                abort: fault.abort.as_ref().map(|a| FaultAbort {
                    percentage: Some(fraction(a.percentage)),
                    error_type: match (a.http_status, a.grpc_code()) {
                        (Some(s), _) => Some(fault_abort::ErrorType::HttpStatus(s)),
                        (None, Some(c)) => Some(fault_abort::ErrorType::GrpcStatus(c)),
                        (None, None) => None,
                    },
                    ..Default::default()
                }),
                ..Default::default()
            };
            route
                .typed_per_filter_config
                .insert(FAULT_FILTER.to_owned(), any_of(FAULT_TYPE, &config));
        }
        Some(route)
    }

    fn action(&mut self, key: &RuleKey, at: &str, r: &HttpRoute) -> RouteAction {
        let grpc = self.client == Client::Grpc;
        let port = self.port.port;
        let mut action = RouteAction {
            cluster_specifier: Some(if r.route.len() == 1 {
                route_action::ClusterSpecifier::Cluster(destination_cluster(
                    self.ms,
                    &r.route[0].destination,
                    port,
                ))
            } else {
                route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: r
                        .route
                        .iter()
                        .map(|d| weighted_cluster::ClusterWeight {
                            name: destination_cluster(self.ms, &d.destination, port),
                            weight: Some(UInt32Value {
                                value: d.weight.unwrap_or(1),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
            }),
            ..Default::default()
        };
        let streams = self.port.protocol.is_http2();
        match (r.timeout, grpc) {
            (Some(t), false) => action.timeout = Some(pb_duration(t.0)),
            (Some(t), true) => {
                action.max_stream_duration = Some(route_action::MaxStreamDuration {
                    max_stream_duration: Some(pb_duration(t.0)),
                    ..Default::default()
                })
            }
            // Streams (gRPC, HTTP/2) must not be cut by Envoy's default 15 s.
            (None, false) if streams => action.timeout = Some(PbDuration::default()),
            (None, _) => {}
        }
        if let Some(retries) = &r.retries
            && retries.attempts > 0
        {
            let all = retries
                .retry_on
                .clone()
                .unwrap_or_else(|| rules::DEFAULT_RETRY_ON.to_owned());
            let retry_on = if grpc {
                let kept: Vec<&str> = all
                    .split(',')
                    .map(str::trim)
                    .filter(|c| GRPC_RETRY_ON.contains(c))
                    .collect();
                let dropped: Vec<&str> = all
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !GRPC_RETRY_ON.contains(c))
                    .collect();
                if !dropped.is_empty() && retries.retry_on.is_some() {
                    self.note(
                        key,
                        format!("{at}.retries.retryOn: {}", dropped.join(",")),
                        if kept.is_empty() {
                            "no retries: gRPC retries on gRPC status codes only"
                        } else {
                            "gRPC retries on gRPC status codes only"
                        },
                    );
                }
                kept.join(",")
            } else {
                all
            };
            action.retry_policy = (!retry_on.is_empty()).then(|| RetryPolicy {
                retriable_status_codes: if retry_on.contains("retriable-status-codes") {
                    vec![503]
                } else {
                    Vec::new()
                },
                retry_on,
                num_retries: Some(UInt32Value {
                    value: retries.attempts,
                }),
                per_try_timeout: retries.per_try_timeout.map(|t| pb_duration(t.0)),
                ..Default::default()
            });
        }
        if let Some(rewrite) = &r.rewrite {
            if grpc {
                self.note(
                    key,
                    format!("{at}.rewrite"),
                    "the path and authority are sent unchanged",
                );
            } else {
                if let Some(uri) = &rewrite.uri {
                    action.prefix_rewrite = uri.clone();
                }
                if let Some(authority) = &rewrite.authority {
                    action.host_rewrite_specifier = Some(
                        route_action::HostRewriteSpecifier::HostRewriteLiteral(authority.clone()),
                    );
                }
            }
        }
        if let Some(mirror) = &r.mirror {
            if grpc {
                self.note(key, format!("{at}.mirror"), "requests are not mirrored");
            } else {
                action.request_mirror_policies = vec![route_action::RequestMirrorPolicy {
                    cluster: destination_cluster(self.ms, mirror, port),
                    runtime_fraction: Some(RuntimeFractionalPercent {
                        default_value: Some(fraction(r.mirror_percentage)),
                        ..Default::default()
                    }),
                    ..Default::default()
                }];
            }
        }
        // The hash for ring hash comes from the policy of the host routed
        // to (the first destination's: Envoy hashes once per route).
        if let Some(first) = r.route.first() {
            let d = &first.destination;
            let port = d.port.map_or(port, |p| p.number);
            action.hash_policy = self.hash_policy(&d.host, port, d.subset.as_deref());
        }
        action
    }

    /// The default route: the whole service on this port.
    fn default_route(&mut self) -> Route {
        let mut route = route_to(
            cluster_name(&self.ms.service.hostname, self.port.port),
            self.port.protocol,
        );
        if let Some(route::Action::Route(action)) = &mut route.action {
            let host = self.ms.service.hostname.clone();
            action.hash_policy = self.hash_policy(&host, self.port.port, None);
            if self.client == Client::Grpc {
                action.timeout = None;
            }
        }
        route
    }

    /// The hash policy for ring hash, from the destination policy of the
    /// host routed to, for its `port` and `subset`.
    fn hash_policy(
        &mut self,
        host: &str,
        port: u32,
        subset: Option<&str>,
    ) -> Vec<route_action::HashPolicy> {
        let Some((rule, policy)) = self.ms.policy_of(host) else {
            return Vec::new();
        };
        let subset = subset.and_then(|n| policy.subsets.iter().find(|s| s.name == n));
        let Some(hash) = policy
            .effective(port, subset)
            .load_balancer
            .and_then(|lb| lb.consistent_hash.as_ref())
        else {
            return Vec::new();
        };
        use route_action::hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier};
        let spec = if let Some(h) = &hash.http_header_name {
            PolicySpecifier::Header(Header {
                header_name: h.clone(),
                ..Default::default()
            })
        } else if let Some(c) = &hash.http_cookie {
            if self.client == Client::Grpc {
                let key = rule.key.clone();
                self.note(
                    &key,
                    "trafficPolicy.loadBalancer.consistentHash.httpCookie",
                    "requests are spread at random over the ring",
                );
                return Vec::new();
            }
            PolicySpecifier::Cookie(Cookie {
                name: c.name.clone(),
                path: c.path.clone().unwrap_or_default(),
                ttl: c.ttl.map(|t| pb_duration(t.0)),
                ..Default::default()
            })
        } else {
            if self.client == Client::Grpc {
                let key = rule.key.clone();
                self.note(
                    &key,
                    "trafficPolicy.loadBalancer.consistentHash.useSourceIp",
                    "requests are spread at random over the ring",
                );
                return Vec::new();
            }
            PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
        };
        vec![route_action::HashPolicy {
            policy_specifier: Some(spec),
            ..Default::default()
        }]
    }
}

/// The subset clusters a service's policy defines, per port: name and
/// subset.
pub(super) fn subsets<'a>(ms: &'a MeshService) -> impl Iterator<Item = &'a rules::Subset> + 'a {
    ms.policy().into_iter().flat_map(|(_, p)| p.subsets.iter())
}

/// Applies a destination policy's settings to a cluster of `port` (and
/// `subset`): the load balancer, the connect timeout, circuit breakers and
/// outlier detection. For gRPC clients, an LB policy they would NACK is
/// replaced by round robin, and noted.
pub(super) fn apply_policy(
    cluster: &mut Cluster,
    rule: &RuleKey,
    policy: &DestinationPolicy,
    port: u32,
    subset: Option<&rules::Subset>,
    client: Client,
    notes: &mut Vec<Unhonoured>,
) {
    let EffectivePolicy {
        load_balancer,
        connection_pool,
        outlier_detection,
        tls,
    } = policy.effective(port, subset);
    let mut note = |feature: String, instead: &str| {
        let n = Unhonoured {
            rule: rule.clone(),
            feature,
            client,
            instead: instead.to_owned(),
        };
        if !notes.contains(&n) {
            notes.push(n);
        }
    };
    if let Some(lb) = load_balancer {
        if let Some(hash) = &lb.consistent_hash {
            cluster.lb_policy = LbPolicy::RingHash as i32;
            cluster.lb_config = Some(cluster::LbConfig::RingHashLbConfig(
                cluster::RingHashLbConfig {
                    minimum_ring_size: hash.minimum_ring_size.map(|v| UInt64Value { value: v }),
                    hash_function: cluster::ring_hash_lb_config::HashFunction::XxHash as i32,
                    ..Default::default()
                },
            ));
        } else if let Some(simple) = lb.simple {
            cluster.lb_policy = match (simple, client) {
                (SimpleLb::RoundRobin, _) => LbPolicy::RoundRobin,
                (SimpleLb::LeastRequest, Client::Envoy) => LbPolicy::LeastRequest,
                (SimpleLb::Random, Client::Envoy) => LbPolicy::Random,
                (SimpleLb::LeastRequest, Client::Grpc) => {
                    note(
                        "trafficPolicy.loadBalancer.simple: LEAST_REQUEST".into(),
                        "round robin (not every gRPC language implements least request)",
                    );
                    LbPolicy::RoundRobin
                }
                (SimpleLb::Random, Client::Grpc) => {
                    note(
                        "trafficPolicy.loadBalancer.simple: RANDOM".into(),
                        "round robin",
                    );
                    LbPolicy::RoundRobin
                }
            } as i32;
        }
    }
    if let Some(pool) = connection_pool {
        if let Some(t) = pool.tcp.as_ref().and_then(|t| t.connect_timeout) {
            cluster.connect_timeout = Some(pb_duration(t.0));
        }
        let tcp = pool.tcp.as_ref();
        let http = pool.http.as_ref();
        let u = |v: Option<u32>| v.map(|value| UInt32Value { value });
        let thresholds = circuit_breakers::Thresholds {
            max_connections: u(tcp.and_then(|t| t.max_connections)),
            max_pending_requests: u(http.and_then(|h| h.http1_max_pending_requests)),
            max_requests: u(http.and_then(|h| h.http2_max_requests)),
            max_retries: u(http.and_then(|h| h.max_retries)),
            ..Default::default()
        };
        if thresholds != circuit_breakers::Thresholds::default() {
            if client == Client::Grpc
                && (thresholds.max_connections.is_some()
                    || thresholds.max_pending_requests.is_some()
                    || thresholds.max_retries.is_some())
            {
                note(
                    "trafficPolicy.connectionPool (but http2MaxRequests)".into(),
                    "gRPC limits only concurrent requests (http2MaxRequests)",
                );
            }
            cluster.circuit_breakers = Some(CircuitBreakers {
                thresholds: vec![thresholds],
                ..Default::default()
            });
        }
        if let Some(n) = http.and_then(|h| h.max_requests_per_connection) {
            if client == Client::Grpc {
                note(
                    "trafficPolicy.connectionPool.http.maxRequestsPerConnection".into(),
                    "connections are kept",
                );
            }
            #[allow(deprecated)]
            {
                cluster.max_requests_per_connection = Some(UInt32Value { value: n });
            }
        }
    }
    if let Some(od) = outlier_detection {
        let d = |v: Option<rules::Duration>| v.map(|t| pb_duration(t.0));
        let u = |v: u32| Some(UInt32Value { value: v });
        let mut e = EnvoyOutlier {
            interval: d(od.interval),
            base_ejection_time: d(od.base_ejection_time),
            max_ejection_percent: od.max_ejection_percent.and_then(u),
            // Istio's mapping: success-rate ejection off; each consecutive
            // counter enforced when given, the 5xx one off when only the
            // gateway one is.
            enforcing_success_rate: u(0),
            ..Default::default()
        };
        match od.consecutive_5xx_errors {
            Some(0) => e.enforcing_consecutive_5xx = u(0),
            Some(n) => {
                e.consecutive_5xx = u(n);
                e.enforcing_consecutive_5xx = u(100);
            }
            None if od.consecutive_gateway_errors.is_some() => e.enforcing_consecutive_5xx = u(0),
            None => {}
        }
        if let Some(n) = od.consecutive_gateway_errors {
            e.consecutive_gateway_failure = u(n);
            e.enforcing_consecutive_gateway_failure = u(if n == 0 { 0 } else { 100 });
        }
        if client == Client::Grpc {
            note(
                "trafficPolicy.outlierDetection.consecutive5xxErrors/consecutiveGatewayErrors"
                    .into(),
                "gRPC ejects by success rate and failure percentage only (gRFC A50); no endpoint is ejected",
            );
        } else {
            cluster.outlier_detection = Some(e);
        }
    }
    if let Some(tls) = tls {
        match (tls.mode, client) {
            (rules::TlsMode::IstioMutual, _) => {
                // Mesh proxies get it (translate::mesh_clusters); others
                // have no workload certificate to send.
                note(
                    "trafficPolicy.tls.mode: ISTIO_MUTUAL".into(),
                    "plaintext from proxies without a workload certificate",
                );
            }
            (_, Client::Grpc) => note(
                format!("trafficPolicy.tls.mode: {:?}", tls.mode),
                "plaintext (proxyless gRPC takes TLS settings from certificate providers only)",
            ),
            (_, Client::Envoy) => cluster.transport_socket = Some(super::mtls::user_socket(tls)),
        }
    }
}
