//! Validation of rules: what Envoy or a gRPC client would reject later (a
//! NACK far from its cause), or what cannot mean what its author meant, is
//! refused here with the rule, the route and the field named.

use std::collections::BTreeSet;
use std::fmt;

use super::common::{Duration, Percent, StringMatch};
use super::policy::{DestinationPolicy, LoadBalancer, OutlierDetection, TrafficPolicy};
use super::route::{
    Destination, GRPC_RETRY_ON, HTTP_RETRY_ON, HttpMatch, HttpRoute, RouteDestination, RouteRule,
};
use super::{Rule, RuleKey, RuleSpec};
use crate::validate::dns_name_problem;

/// One problem in a rule: which rule, which field (`http[0].route[1].weight`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleProblem {
    /// The rule.
    pub rule: RuleKey,
    /// The field, by path.
    pub field: String,
    /// What is wrong, lowercase.
    pub problem: String,
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, field {}: {}", self.rule, self.field, self.problem)
    }
}

/// Every problem found in one rule (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(transparent)]
pub struct RuleProblems(pub Vec<RuleProblem>);

impl fmt::Display for RuleProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::validate::write_joined(f, &self.0)
    }
}

/// Routes one rule may hold.
pub const MAX_ROUTES: usize = 1024;
/// Matches, destinations or header operations one route may hold.
pub const MAX_PER_ROUTE: usize = 64;
/// Subsets one policy may define.
pub const MAX_SUBSETS: usize = 256;
/// Hosts one route rule may bind to.
pub const MAX_HOSTS: usize = 256;
/// The longest regex, in bytes.
pub const MAX_REGEX: usize = 4096;

struct Checker<'a> {
    rule: &'a RuleKey,
    problems: Vec<RuleProblem>,
}

impl Checker<'_> {
    fn bad(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(RuleProblem {
            rule: self.rule.clone(),
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn count(&mut self, field: &str, n: usize, max: usize) -> bool {
        if n > max {
            self.bad(field, format!("has {n} entries, at most {max} allowed"));
            return false;
        }
        true
    }

    /// A name at a gateway: a DNS name, `*`, or `*.` and a DNS name.
    fn gateway_host(&mut self, field: &str, host: &str) {
        let name = host.strip_prefix("*.").unwrap_or(host);
        if host != "*" {
            self.host(field, name);
        }
    }

    fn host(&mut self, field: &str, host: &str) {
        if let Some(p) = dns_name_problem(host) {
            self.bad(field, format!("host {host:?} {p}"));
        }
    }

    fn port(&mut self, field: &str, port: u32) {
        if port == 0 || port > 65535 {
            self.bad(field, format!("port {port} is not in 1-65535"));
        }
    }

    fn positive(&mut self, field: &str, d: Duration) {
        if d.0.is_zero() {
            self.bad(field, "must be longer than zero");
        }
    }

    fn percent(&mut self, field: &str, p: Percent) {
        if !(p.0.is_finite() && (0.0..=100.0).contains(&p.0)) {
            self.bad(field, format!("{} is not a percentage from 0 to 100", p.0));
        }
    }

    fn at_least_one(&mut self, field: &str, n: Option<u32>) {
        if n == Some(0) {
            self.bad(field, "must be at least 1");
        }
    }

    fn string_match(&mut self, field: &str, m: &StringMatch) {
        if let StringMatch::Regex(re) = m
            && let Some(p) = regex_problem(re)
        {
            self.bad(field, p);
        }
    }

    fn header_name(&mut self, field: &str, name: &str) {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.:".contains(&b));
        if !ok {
            self.bad(
                field,
                format!("header name {name:?} must be lowercase letters, digits, '-', '_' or '.'"),
            );
        }
    }

    fn subset_name(&mut self, field: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            self.bad(
                field,
                format!(
                    "subset name {name:?} must be a DNS label (lowercase letters, digits, '-')"
                ),
            );
        }
    }
}

/// What keeps `re` from compiling as RE2 would compile it, or `None`. The
/// `regex` crate's syntax is RE2's, less some rarely used classes; both
/// refuse look-around and backreferences, which Envoy and gRPC would NACK.
pub fn regex_problem(re: &str) -> Option<String> {
    if re.len() > MAX_REGEX {
        return Some(format!("regex is {} bytes, at most {MAX_REGEX}", re.len()));
    }
    if re.contains("(?=") || re.contains("(?!") || re.contains("(?<=") || re.contains("(?<!") {
        return Some(format!(
            "regex {re:?} uses look-around, which RE2 (Envoy, gRPC) does not support"
        ));
    }
    match regex_syntax::Parser::new().parse(re) {
        Ok(_) => None,
        Err(e) => {
            let text = e.to_string();
            let why = text.lines().last().unwrap_or("invalid").trim();
            Some(format!("regex {re:?} is not valid RE2 syntax: {why}"))
        }
    }
}

impl Rule {
    /// Checks the rule on its own (names it refers to in other rules, such
    /// as subsets, are checked by `sextant check-config`).
    pub fn validate(&self) -> Result<(), RuleProblems> {
        let mut c = Checker {
            rule: &self.key,
            problems: Vec::new(),
        };
        if c.rule.name.is_empty() {
            c.bad("name", "must not be empty");
        }
        let export = self.export_to();
        if c.count("exportTo", export.len(), MAX_EXPORT_TO) {
            for i in 0..export.len() {
                if let Some(p) = crate::export::entry_problem(export, i) {
                    c.bad(format!("exportTo[{i}]"), p);
                }
            }
        }
        match &self.spec {
            RuleSpec::Route(r) => route_rule(&mut c, r),
            RuleSpec::Policy(p) => policy(&mut c, p),
            RuleSpec::Scope(s) => scope(&mut c, s),
            RuleSpec::PeerAuth(p) => peer_auth(&mut c, p),
            RuleSpec::Authz(a) => authz(&mut c, a),
            RuleSpec::Gateway(g) => gateway(&mut c, g),
            RuleSpec::Credential(cred) => credential(&mut c, cred),
        }
        if c.problems.is_empty() {
            Ok(())
        } else {
            Err(RuleProblems(c.problems))
        }
    }
}

/// The most gateways one route rule binds to.
pub const MAX_GATEWAYS: usize = 64;

/// The most `exportTo` entries one rule lists.
pub const MAX_EXPORT_TO: usize = 64;

fn route_rule(c: &mut Checker<'_>, r: &RouteRule) {
    if r.hosts.is_empty() {
        c.bad("hosts", "must name at least one host");
    }
    if c.count("hosts", r.hosts.len(), MAX_HOSTS) {
        let mut seen = BTreeSet::new();
        for (i, h) in r.hosts.iter().enumerate() {
            if r.for_mesh() {
                c.host(&format!("hosts[{i}]"), h);
            } else {
                // At a gateway, the names requests carry: wildcards too.
                c.gateway_host(&format!("hosts[{i}]"), h);
            }
            if !seen.insert(h) {
                c.bad(format!("hosts[{i}]"), format!("host {h:?} is listed twice"));
            }
        }
    }
    if c.count("gateways", r.gateways.len(), MAX_GATEWAYS) {
        for (i, g) in r.gateways.iter().enumerate() {
            if g == super::gateway::MESH {
                continue;
            }
            let ok = super::gateway::parse_entry(g, "default").is_some_and(|e| {
                let labels = [Some(e.namespace), Some(e.name), e.listener];
                labels
                    .into_iter()
                    .flatten()
                    .all(|l| dns_name_problem(l).is_none() && !l.contains('.'))
                    && e.port.is_none_or(|p| (1..=65535).contains(&p))
                    && (e.listener.is_none() || g.matches('/').count() == 2)
            });
            if !ok {
                c.bad(
                    format!("gateways[{i}]"),
                    format!(
                        "{g:?}: `mesh`, a gateway's NAME or NAMESPACE/NAME, optionally /LISTENER and :PORT"
                    ),
                );
            }
        }
    }
    if c.count("tcp", r.tcp.len(), MAX_ROUTES) {
        for (i, route) in r.tcp.iter().enumerate() {
            let at = format!("tcp[{i}]");
            if c.count(&format!("{at}.match"), route.matches.len(), MAX_PER_ROUTE) {
                for (j, m) in route.matches.iter().enumerate() {
                    if let Some(p) = m.port {
                        c.port(&format!("{at}.match[{j}].port"), p);
                    }
                }
            }
            l4_destinations(c, &at, &route.route);
        }
    }
    if c.count("tls", r.tls.len(), MAX_ROUTES) {
        for (i, route) in r.tls.iter().enumerate() {
            let at = format!("tls[{i}]");
            if route.matches.is_empty() {
                c.bad(
                    format!("{at}.match"),
                    "needs at least one match with sniHosts",
                );
            }
            if c.count(&format!("{at}.match"), route.matches.len(), MAX_PER_ROUTE) {
                for (j, m) in route.matches.iter().enumerate() {
                    let f = format!("{at}.match[{j}]");
                    if m.sni_hosts.is_empty() {
                        c.bad(
                            format!("{f}.sniHosts"),
                            "must name at least one server name",
                        );
                    }
                    if c.count(&format!("{f}.sniHosts"), m.sni_hosts.len(), MAX_HOSTS) {
                        for (k, h) in m.sni_hosts.iter().enumerate() {
                            let name = h.strip_prefix("*.").unwrap_or(h);
                            c.host(&format!("{f}.sniHosts[{k}]"), name);
                        }
                    }
                    if let Some(p) = m.port {
                        c.port(&format!("{f}.port"), p);
                    }
                }
            }
            l4_destinations(c, &at, &route.route);
        }
    }
    if !c.count("http", r.http.len(), MAX_ROUTES) {
        return;
    }
    for (i, route) in r.http.iter().enumerate() {
        http_route(c, &format!("http[{i}]"), route);
    }
}

/// A TCP or TLS route's destinations: at least one, weights as HTTP's.
fn l4_destinations(c: &mut Checker<'_>, at: &str, route: &[RouteDestination]) {
    if route.is_empty() {
        c.bad(format!("{at}.route"), "needs at least one destination");
    }
    if c.count(&format!("{at}.route"), route.len(), MAX_PER_ROUTE) {
        weights(c, at, route);
        for (i, d) in route.iter().enumerate() {
            destination(c, &format!("{at}.route[{i}].destination"), &d.destination);
        }
    }
}

/// Every destination weighted, or none (equal shares); weights sum to 100.
fn weights(c: &mut Checker<'_>, at: &str, route: &[RouteDestination]) {
    let weights: Vec<Option<u32>> = route.iter().map(|d| d.weight).collect();
    let given = weights.iter().filter(|w| w.is_some()).count();
    if given > 0 && given < weights.len() {
        c.bad(
            format!("{at}.route"),
            "give every destination a weight, or none (equal shares)",
        );
    } else if given > 0 {
        let sum: u64 = weights.iter().flatten().map(|&w| u64::from(w)).sum();
        if sum != 100 {
            c.bad(
                format!("{at}.route"),
                format!("weights sum to {sum}, not 100"),
            );
        }
    }
}

fn http_route(c: &mut Checker<'_>, at: &str, r: &HttpRoute) {
    if c.count(&format!("{at}.match"), r.matches.len(), MAX_PER_ROUTE) {
        for (i, m) in r.matches.iter().enumerate() {
            http_match(c, &format!("{at}.match[{i}]"), m);
        }
    }
    match (r.route.is_empty(), &r.redirect) {
        (true, None) => c.bad(at, "needs a route (destinations) or a redirect"),
        (false, Some(_)) => c.bad(at, "has both a route and a redirect; use one"),
        _ => {}
    }
    if c.count(&format!("{at}.route"), r.route.len(), MAX_PER_ROUTE) {
        weights(c, at, &r.route);
        for (i, d) in r.route.iter().enumerate() {
            destination(c, &format!("{at}.route[{i}].destination"), &d.destination);
        }
    }
    if let Some(redirect) = &r.redirect {
        if let Some(code) = redirect.redirect_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            c.bad(
                format!("{at}.redirect.redirectCode"),
                format!("{code} is not a redirect status (301, 302, 303, 307, 308)"),
            );
        }
        if redirect.uri.is_none() && redirect.authority.is_none() {
            c.bad(format!("{at}.redirect"), "needs a uri or an authority");
        }
        if r.rewrite.is_some() || r.mirror.is_some() || r.retries.is_some() {
            c.bad(
                at,
                "a redirect is answered by the proxy: rewrite, mirror and retries do not apply",
            );
        }
    }
    if let Some(rewrite) = &r.rewrite {
        if let Some(uri) = &rewrite.uri
            && uri.is_empty()
        {
            c.bad(format!("{at}.rewrite.uri"), "must not be empty");
        }
        if r.matches
            .iter()
            .any(|m| matches!(m.uri, Some(StringMatch::Regex(_))))
        {
            c.bad(
                format!("{at}.rewrite.uri"),
                "a prefix rewrite needs exact or prefix path matches, not regex",
            );
        }
    }
    if let Some(t) = r.timeout {
        c.positive(&format!("{at}.timeout"), t);
    }
    if let Some(retries) = &r.retries {
        let f = format!("{at}.retries");
        if retries.attempts > 10 {
            c.bad(format!("{f}.attempts"), "at most 10 retries");
        }
        if let Some(t) = retries.per_try_timeout {
            c.positive(&format!("{f}.perTryTimeout"), t);
        }
        if let Some(on) = &retries.retry_on {
            for cond in on.split(',').map(str::trim) {
                let known = HTTP_RETRY_ON.contains(&cond)
                    || GRPC_RETRY_ON.contains(&cond)
                    || cond.parse::<u16>().is_ok_and(|n| (100..600).contains(&n));
                if !known {
                    c.bad(
                        format!("{f}.retryOn"),
                        format!(
                            "unknown condition {cond:?}; HTTP: {}; gRPC: {}; or a status code",
                            HTTP_RETRY_ON.join(","),
                            GRPC_RETRY_ON.join(",")
                        ),
                    );
                }
            }
        }
    }
    if let Some(fault) = &r.fault {
        let f = format!("{at}.fault");
        if fault.delay.is_none() && fault.abort.is_none() {
            c.bad(&f, "needs a delay or an abort");
        }
        if let Some(d) = &fault.delay {
            c.positive(&format!("{f}.delay.fixedDelay"), d.fixed_delay);
            if let Some(p) = d.percentage {
                c.percent(&format!("{f}.delay.percentage"), p);
            }
        }
        if let Some(a) = &fault.abort {
            match (a.http_status, &a.grpc_status) {
                (Some(_), Some(_)) => c.bad(
                    format!("{f}.abort"),
                    "give httpStatus or grpcStatus, not both",
                ),
                (None, None) => c.bad(format!("{f}.abort"), "needs httpStatus or grpcStatus"),
                (Some(s), None) if !(200..600).contains(&s) => c.bad(
                    format!("{f}.abort.httpStatus"),
                    format!("{s} is not an HTTP status from 200 to 599"),
                ),
                (None, Some(g)) if a.grpc_code().is_none() => c.bad(
                    format!("{f}.abort.grpcStatus"),
                    format!("{g:?} is not a gRPC status (UNAVAILABLE, 14, ...)"),
                ),
                _ => {}
            }
            if let Some(p) = a.percentage {
                c.percent(&format!("{f}.abort.percentage"), p);
            }
        }
    }
    if let Some(m) = &r.mirror {
        destination(c, &format!("{at}.mirror"), m);
    }
    if let Some(p) = r.mirror_percentage {
        c.percent(&format!("{at}.mirrorPercentage"), p);
        if r.mirror.is_none() {
            c.bad(
                format!("{at}.mirrorPercentage"),
                "is set but there is no mirror",
            );
        }
    }
    if let Some(h) = &r.headers {
        for (side, ops) in [("request", &h.request), ("response", &h.response)] {
            let Some(ops) = ops else { continue };
            let f = format!("{at}.headers.{side}");
            let n = ops.set.len() + ops.add.len() + ops.remove.len();
            if !c.count(&f, n, MAX_PER_ROUTE) {
                continue;
            }
            for name in ops.set.keys().chain(ops.add.keys()).chain(&ops.remove) {
                c.header_name(&f, name);
                if name.starts_with(':') || name == "host" {
                    c.bad(
                        &f,
                        format!("{name:?} is a pseudo-header; use rewrite.authority"),
                    );
                }
            }
        }
    }
}

fn http_match(c: &mut Checker<'_>, at: &str, m: &HttpMatch) {
    if let Some(uri) = &m.uri {
        c.string_match(&format!("{at}.uri"), uri);
        if let StringMatch::Exact(p) | StringMatch::Prefix(p) = uri
            && !p.starts_with('/')
        {
            c.bad(
                format!("{at}.uri"),
                format!("path {p:?} must start with '/'"),
            );
        }
    }
    if let Some(method) = &m.method {
        c.string_match(&format!("{at}.method"), method);
    }
    let n = m.headers.len() + m.without_headers.len();
    if !c.count(&format!("{at}.headers"), n, MAX_PER_ROUTE) {
        return;
    }
    for (field, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, cond) in map {
            let f = format!("{at}.{field}.{name}");
            c.header_name(&f, name);
            if let Some(sm) = &cond.0 {
                c.string_match(&f, sm);
            }
        }
    }
    if let Some(p) = m.port {
        c.port(&format!("{at}.port"), p);
    }
}

fn destination(c: &mut Checker<'_>, at: &str, d: &Destination) {
    c.host(&format!("{at}.host"), &d.host);
    if let Some(s) = &d.subset {
        c.subset_name(&format!("{at}.subset"), s);
    }
    if let Some(p) = d.port {
        c.port(&format!("{at}.port.number"), p.number);
    }
}

fn policy(c: &mut Checker<'_>, p: &DestinationPolicy) {
    c.host("host", &p.host);
    if let Some(tp) = &p.traffic_policy {
        traffic_policy(c, "trafficPolicy", tp);
    }
    if !c.count("subsets", p.subsets.len(), MAX_SUBSETS) {
        return;
    }
    let mut seen = BTreeSet::new();
    for (i, s) in p.subsets.iter().enumerate() {
        let at = format!("subsets[{i}]");
        c.subset_name(&format!("{at}.name"), &s.name);
        if !seen.insert(&s.name) {
            c.bad(
                format!("{at}.name"),
                format!("subset {:?} is defined twice", s.name),
            );
        }
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(c, &format!("{at}.trafficPolicy"), tp);
        }
    }
}

fn traffic_policy(c: &mut Checker<'_>, at: &str, tp: &TrafficPolicy) {
    parts(
        c,
        at,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
    );
    if let Some(tls) = &tp.tls {
        client_tls(c, &format!("{at}.tls"), tls);
    }
    if !c.count(
        &format!("{at}.portLevelSettings"),
        tp.port_level_settings.len(),
        MAX_PER_ROUTE,
    ) {
        return;
    }
    let mut seen = BTreeSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let f = format!("{at}.portLevelSettings[{i}]");
        c.port(&format!("{f}.port.number"), pl.port.number);
        if !seen.insert(pl.port.number) {
            c.bad(&f, format!("port {} has two settings", pl.port.number));
        }
        parts(
            c,
            &f,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
        );
        if let Some(tls) = &pl.tls {
            client_tls(c, &format!("{f}.tls"), tls);
        }
    }
}

/// TLS settings: what each mode needs, and nothing it would ignore.
fn client_tls(c: &mut Checker<'_>, at: &str, tls: &super::policy::ClientTls) {
    use super::policy::TlsMode;
    let files = [
        ("clientCertificate", &tls.client_certificate),
        ("privateKey", &tls.private_key),
        ("caCertificates", &tls.ca_certificates),
    ];
    if tls.credential_name.is_some() {
        c.bad(
            format!("{at}.credentialName"),
            "not served for sidecars (the proxy cannot read Kubernetes Secrets): give clientCertificate, privateKey and caCertificates files",
        );
    }
    for (name, value) in files {
        if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
            c.bad(format!("{at}.{name}"), "empty");
        }
    }
    match tls.mode {
        TlsMode::Disable | TlsMode::IstioMutual => {
            for (name, value) in files {
                if value.is_some() {
                    c.bad(
                        format!("{at}.{name}"),
                        format!("{:?} uses no files of yours", tls.mode),
                    );
                }
            }
        }
        TlsMode::Simple => {
            if tls.client_certificate.is_some() || tls.private_key.is_some() {
                c.bad(
                    at,
                    "SIMPLE sends no client certificate: use MUTUAL for clientCertificate and privateKey",
                );
            }
        }
        TlsMode::Mutual => {
            if tls.client_certificate.is_none() || tls.private_key.is_none() {
                c.bad(at, "MUTUAL needs clientCertificate and privateKey");
            }
        }
    }
}

fn parts(
    c: &mut Checker<'_>,
    at: &str,
    lb: Option<&LoadBalancer>,
    pool: Option<&super::policy::ConnectionPool>,
    od: Option<&OutlierDetection>,
) {
    if let Some(lb) = lb {
        let f = format!("{at}.loadBalancer");
        match (&lb.simple, &lb.consistent_hash) {
            (Some(_), Some(_)) => c.bad(&f, "give simple or consistentHash, not both"),
            (None, None) => c.bad(&f, "needs simple or consistentHash"),
            (None, Some(h)) => {
                let keys = usize::from(h.http_header_name.is_some())
                    + usize::from(h.http_cookie.is_some())
                    + usize::from(h.use_source_ip == Some(true));
                if keys != 1 {
                    c.bad(
                        format!("{f}.consistentHash"),
                        "needs exactly one of httpHeaderName, httpCookie, useSourceIp",
                    );
                }
                if let Some(name) = &h.http_header_name {
                    c.header_name(&format!("{f}.consistentHash.httpHeaderName"), name);
                }
                if let Some(cookie) = &h.http_cookie {
                    if cookie.name.is_empty() {
                        c.bad(
                            format!("{f}.consistentHash.httpCookie.name"),
                            "must not be empty",
                        );
                    }
                    if let Some(t) = cookie.ttl {
                        c.positive(&format!("{f}.consistentHash.httpCookie.ttl"), t);
                    }
                }
                if let Some(n) = h.minimum_ring_size
                    && !(1..=8_388_608).contains(&n)
                {
                    c.bad(
                        format!("{f}.consistentHash.minimumRingSize"),
                        format!("{n} is not in 1-8388608 (gRPC's limit)"),
                    );
                }
            }
            (Some(_), None) => {}
        }
    }
    if let Some(pool) = pool {
        let f = format!("{at}.connectionPool");
        if let Some(tcp) = &pool.tcp {
            c.at_least_one(&format!("{f}.tcp.maxConnections"), tcp.max_connections);
            if let Some(t) = tcp.connect_timeout {
                c.positive(&format!("{f}.tcp.connectTimeout"), t);
            }
        }
        if let Some(http) = &pool.http {
            c.at_least_one(
                &format!("{f}.http.http1MaxPendingRequests"),
                http.http1_max_pending_requests,
            );
            c.at_least_one(
                &format!("{f}.http.http2MaxRequests"),
                http.http2_max_requests,
            );
            c.at_least_one(
                &format!("{f}.http.maxRequestsPerConnection"),
                http.max_requests_per_connection,
            );
            c.at_least_one(&format!("{f}.http.maxRetries"), http.max_retries);
        }
    }
    if let Some(od) = od {
        let f = format!("{at}.outlierDetection");
        if let Some(t) = od.interval {
            c.positive(&format!("{f}.interval"), t);
        }
        if let Some(t) = od.base_ejection_time {
            c.positive(&format!("{f}.baseEjectionTime"), t);
        }
        if let Some(p) = od.max_ejection_percent
            && p > 100
        {
            c.bad(
                format!("{f}.maxEjectionPercent"),
                format!("{p} is more than 100"),
            );
        }
    }
}

mod gateway;
mod proxy;
pub use gateway::{MAX_LISTENERS, MAX_PEM_BYTES};
use gateway::{credential, gateway};
pub use proxy::MAX_SELECTOR_LABELS;
use proxy::{authz, peer_auth, scope};

#[cfg(test)]
mod tests;
