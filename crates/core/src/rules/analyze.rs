//! What `istioctl analyze` would warn about, for rules that are each valid
//! on their own but do not fit the services they meet: a destination that
//! no registry has, a subset no policy defines or that selects no
//! endpoint, a route that an earlier catch-all hides, two rules for one
//! host. Warnings, not errors: the configuration is served as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::common::StringMatch;
use super::route::{Destination, HttpMatch, HttpRoute};
use super::{Rule, RuleKey, RuleKind, RuleSpec};
use crate::model::{Hostname, Service};

/// One warning: the rule, where in it, and what.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Warning {
    /// The rule.
    pub rule: RuleKey,
    /// The field, by path (`http[1].route[0].destination`).
    pub field: String,
    /// What does not fit.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, field {}: {}", self.rule, self.field, self.message)
    }
}

/// True when a match holds for every request: no condition at all, or
/// only the path prefix `/`.
fn matches_everything(m: &HttpMatch) -> bool {
    m.method.is_none()
        && m.headers.is_empty()
        && m.without_headers.is_empty()
        && m.port.is_none()
        && match &m.uri {
            None => true,
            Some(StringMatch::Prefix(p)) => p == "/",
            Some(_) => false,
        }
}

fn catch_all(r: &HttpRoute) -> bool {
    r.matches.is_empty() || r.matches.iter().any(matches_everything)
}

/// Warnings for `rules` against `services` (what the registries report).
pub fn analyze(services: &[Service], rules: &[Rule]) -> Vec<Warning> {
    let by_host: BTreeMap<&Hostname, &Service> =
        services.iter().map(|s| (&s.hostname, s)).collect();
    let mut policies: BTreeMap<&Hostname, Vec<&Rule>> = BTreeMap::new();
    let mut routes: BTreeMap<&Hostname, Vec<&Rule>> = BTreeMap::new();
    for rule in rules {
        for h in &rule.hosts {
            match rule.key.kind {
                RuleKind::Policy => policies.entry(h).or_default().push(rule),
                RuleKind::Route => routes.entry(h).or_default().push(rule),
                RuleKind::Scope
                | RuleKind::PeerAuth
                | RuleKind::Authz
                | RuleKind::Gateway
                | RuleKind::Credential => {}
            }
        }
    }
    let mut out = Vec::new();
    let mut warn = |rule: &RuleKey, field: String, message: String| {
        out.push(Warning {
            rule: rule.clone(),
            field,
            message,
        })
    };

    // Two rules of a kind naming a host compete where one namespace's
    // proxies see both in the same tier (see [`super::precedence`]).
    for (kind, map) in [("route rule", &routes), ("destination policy", &policies)] {
        for (host, list) in map {
            let mut sorted = list.clone();
            sorted.sort_by(|a, b| a.key.cmp(&b.key));
            let service_ns = by_host.get(host).map(|s| s.namespace.as_str());
            let named = super::precedence::named_namespaces(sorted.iter().copied());
            let mut reported = BTreeSet::new();
            for ns in std::iter::once(None).chain(named.iter().map(|n| Some(n.as_str()))) {
                let Some((first, rest)) = super::precedence::choose(&sorted, |r| r, ns, service_ns)
                else {
                    continue;
                };
                for other in rest {
                    if !reported.insert(&other.key) {
                        continue;
                    }
                    let (whose, there) = match ns {
                        None => (String::new(), "for it"),
                        Some(ns) => (format!(" for the proxies of namespace {ns}"), "there"),
                    };
                    warn(
                        &other.key,
                        "hosts".into(),
                        format!(
                            "{host} already has the {kind} {}{whose}; this one is ignored {there}",
                            first.key
                        ),
                    );
                }
            }
        }
    }

    let subset_names = |host: &Hostname| -> Option<BTreeSet<&str>> {
        let list = policies.get(host)?;
        Some(
            list.iter()
                .filter_map(|r| r.as_policy())
                .flat_map(|p| p.subsets.iter().map(|s| s.name.as_str()))
                .collect(),
        )
    };
    let check_destination =
        |rule: &RuleKey, at: String, d: &Destination, out: &mut Vec<(RuleKey, String, String)>| {
            let Some(service) = by_host.get(&d.host) else {
                out.push((
                    rule.clone(),
                    at,
                    format!("no registry has the host {}", d.host),
                ));
                return;
            };
            if let Some(port) = d.port
                && !service.ports.iter().any(|p| p.port == port.number)
            {
                out.push((
                    rule.clone(),
                    at.clone(),
                    format!("{} has no port {}", d.host, port.number),
                ));
            }
            if let Some(subset) = &d.subset {
                match subset_names(&d.host) {
                    None => out.push((
                        rule.clone(),
                        at,
                        format!(
                            "subset {subset:?}: no destination policy for {} defines subsets",
                            d.host
                        ),
                    )),
                    Some(names) if !names.contains(subset.as_str()) => out.push((
                        rule.clone(),
                        at,
                        format!(
                            "subset {subset:?} is not defined by the destination policy of {}",
                            d.host
                        ),
                    )),
                    Some(_) => {}
                }
            }
        };

    let mut found: Vec<(RuleKey, String, String)> = Vec::new();
    for rule in rules {
        match &rule.spec {
            RuleSpec::Route(route) => {
                // Every gateway it names exists.
                for (i, g) in route.gateways.iter().enumerate() {
                    let exists = g == super::gateway::MESH
                        || rules.iter().any(|r| {
                            r.key.kind == RuleKind::Gateway
                                && super::gateway::names_gateway(
                                    g,
                                    &rule.key.namespace,
                                    &r.key.namespace,
                                    &r.key.name,
                                )
                        });
                    if !exists {
                        found.push((
                            rule.key.clone(),
                            format!("gateways[{i}]"),
                            format!(
                                "no gateway {g} (a NAME alone is a gateway of the rule's namespace)"
                            ),
                        ));
                    }
                }
                // At a gateway, hosts are the names requests carry.
                for (i, h) in route.hosts.iter().enumerate() {
                    if route.for_mesh() && !by_host.contains_key(h) {
                        found.push((
                            rule.key.clone(),
                            format!("hosts[{i}]"),
                            format!("no registry has the host {h}"),
                        ));
                    }
                }
                let mut shadowed_by: Option<usize> = None;
                for (i, r) in route.http.iter().enumerate() {
                    if let Some(j) = shadowed_by {
                        found.push((
                            rule.key.clone(),
                            format!("http[{i}]"),
                            format!("never used: http[{j}] before it matches every request"),
                        ));
                    }
                    for (k, d) in r.route.iter().enumerate() {
                        check_destination(
                            &rule.key,
                            format!("http[{i}].route[{k}].destination"),
                            &d.destination,
                            &mut found,
                        );
                    }
                    if let Some(m) = &r.mirror {
                        check_destination(&rule.key, format!("http[{i}].mirror"), m, &mut found);
                    }
                    if shadowed_by.is_none() && catch_all(r) {
                        shadowed_by = Some(i);
                    }
                }
                // TCP and TLS routes' destinations, as HTTP ones.
                let l4 = route
                    .tcp
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ("tcp", i, &r.route))
                    .chain(
                        route
                            .tls
                            .iter()
                            .enumerate()
                            .map(|(i, r)| ("tls", i, &r.route)),
                    );
                for (section, i, destinations) in l4 {
                    for (k, d) in destinations.iter().enumerate() {
                        check_destination(
                            &rule.key,
                            format!("{section}[{i}].route[{k}].destination"),
                            &d.destination,
                            &mut found,
                        );
                    }
                }
            }
            RuleSpec::Policy(policy) => {
                let Some(service) = by_host.get(&policy.host) else {
                    found.push((
                        rule.key.clone(),
                        "host".into(),
                        format!("no registry has the host {}", policy.host),
                    ));
                    continue;
                };
                for (i, s) in policy.subsets.iter().enumerate() {
                    if !service.endpoints.iter().any(|e| s.selects(&e.labels)) {
                        found.push((
                            rule.key.clone(),
                            format!("subsets[{i}]"),
                            format!(
                                "subset {:?} selects no endpoint of {} (labels {:?})",
                                s.name, policy.host, s.labels
                            ),
                        ));
                    }
                }
            }
            RuleSpec::PeerAuth(_) | RuleSpec::Authz(_) | RuleSpec::Credential(_) => {}
            RuleSpec::Gateway(g) => {
                // Every credential its listeners name exists.
                for (i, l) in g.listeners.iter().enumerate() {
                    let refs = l.tls.iter().flat_map(|t| t.certificate_refs.iter());
                    for (j, r) in refs.enumerate() {
                        let (ns, name) = super::gateway::credential_ref(r, &rule.key.namespace);
                        let exists = rules.iter().any(|c| {
                            c.key.kind == RuleKind::Credential
                                && c.key.namespace == ns
                                && c.key.name == name
                        });
                        if !exists {
                            found.push((
                                rule.key.clone(),
                                format!("listeners[{i}].tls.certificateRefs[{j}]"),
                                format!("no credential {ns}/{name}: the listener is not served"),
                            ));
                        }
                    }
                }
            }
            RuleSpec::Scope(scope) => {
                for (i, h) in scope.hosts.iter().enumerate() {
                    let namespace = match &h.namespace {
                        super::ScopeNamespace::Named(n) => Some(n.as_str()),
                        super::ScopeNamespace::Own => Some(rule.key.namespace.as_str()),
                        _ => None,
                    };
                    let any = services.iter().any(|s| {
                        h.matches(Some(&rule.key.namespace), &s.namespace, s.hostname.as_str())
                    });
                    if !any && h.namespace != super::ScopeNamespace::Nothing {
                        let whose =
                            namespace.map_or(String::new(), |n| format!(" in namespace {n}"));
                        found.push((
                            rule.key.clone(),
                            format!("hosts[{i}]"),
                            format!("{h} matches no service{whose}"),
                        ));
                    }
                }
            }
        }
    }
    for (rule, field, message) in found {
        warn(&rule, field, message);
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Protocol};
    use crate::rules::{PolicyEntry, RouteEntry};

    fn route(yaml: &str) -> Rule {
        serde_yaml_ng::from_str::<RouteEntry>(yaml)
            .expect("route")
            .into()
    }

    fn policy(yaml: &str) -> Rule {
        serde_yaml_ng::from_str::<PolicyEntry>(yaml)
            .expect("policy")
            .into()
    }

    #[test]
    fn warns_as_istioctl_analyze_would() {
        let mut ep = Endpoint::new("10.0.0.1".parse().expect("ip"));
        ep.labels.insert("version".into(), "v1".into());
        let services = vec![
            Service::new("a.svc")
                .with_port("http", 80, Protocol::Http)
                .with_endpoint(ep),
        ];
        let rules = vec![
            policy(
                "name: a\nhost: a.svc\nsubsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]",
            ),
            route(
                "name: a\nhosts: [a.svc, gone.svc]\nhttp:\n\
                 - route: [{destination: {host: a.svc, subset: v3}}, {destination: {host: nowhere.svc}}]\n\
                 - match: [{uri: {prefix: /x}}]\n  route: [{destination: {host: a.svc, port: {number: 81}}}]\n\
                 tcp: [{route: [{destination: {host: db.svc}}]}]\n\
                 tls: [{match: [{sniHosts: [a.svc]}], route: [{destination: {host: a.svc, subset: v9}}]}]\n",
            ),
            route("name: b\nhosts: [a.svc]\nhttp: [{route: [{destination: {host: a.svc}}]}]"),
        ];
        let text: Vec<String> = analyze(&services, &rules)
            .iter()
            .map(|w| w.to_string())
            .collect();
        for want in [
            "policy default/a, field subsets[1]: subset \"v2\" selects no endpoint of a.svc",
            "route default/a, field hosts[1]: no registry has the host gone.svc",
            "route default/a, field http[0].route[0].destination: subset \"v3\" is not defined by the destination policy of a.svc",
            "route default/a, field http[0].route[1].destination: no registry has the host nowhere.svc",
            "route default/a, field tcp[0].route[0].destination: no registry has the host db.svc",
            "route default/a, field tls[0].route[0].destination: subset \"v9\" is not defined by the destination policy of a.svc",
            "route default/a, field http[1]: never used: http[0] before it matches every request",
            "route default/a, field http[1].route[0].destination: a.svc has no port 81",
            "route default/b, field hosts: a.svc already has the route rule route default/a; this one is ignored for it",
        ] {
            assert!(
                text.iter().any(|t| t.starts_with(want)),
                "missing {want:?} in {text:#?}"
            );
        }
        assert_eq!(text.len(), 9, "{text:#?}");
        assert!(analyze(&services, &rules[..1]).len() == 1);
    }

    /// Rules of different namespaces for one host compete only where one
    /// namespace's proxies see both in the same tier.
    #[test]
    fn rules_for_different_namespaces_do_not_compete() {
        let mut svc = Service::new("a.shop.svc").with_port("http", 80, Protocol::Http);
        svc.namespace = "shop".into();
        let to_a = "hosts: [a.shop.svc]\nhttp: [{route: [{destination: {host: a.shop.svc}}]}]";
        let warnings = |rules: &[Rule]| -> Vec<String> {
            analyze(std::slice::from_ref(&svc), rules)
                .iter()
                .map(|w| w.to_string())
                .collect()
        };
        let own = |ns: &str, export: &str| {
            route(&format!(
                "name: r\nnamespace: {ns}\nexportTo: {export}\n{to_a}"
            ))
        };
        assert_eq!(
            warnings(&[own("shop", "[.]"), own("web", "[.]")]),
            Vec::<String>::new()
        );
        assert_eq!(
            warnings(&[own("shop", "['*']"), own("web", "[.]")]),
            Vec::<String>::new()
        );
        assert_eq!(
            warnings(&[own("shop", "[]"), own("web", "[]")]),
            [
                "route web/r, field hosts: a.shop.svc already has the route rule route shop/r; this one is ignored for it"
            ]
        );
        let second = route(&format!("name: s\nnamespace: web\nexportTo: [.]\n{to_a}"));
        assert_eq!(
            warnings(&[own("web", "[.]"), second]),
            [
                "route web/s, field hosts: a.shop.svc already has the route rule route web/r for the proxies of namespace web; this one is ignored there"
            ]
        );
    }
}
