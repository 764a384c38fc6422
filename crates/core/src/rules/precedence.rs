//! Which of several route rules (or destination policies) naming one host
//! the proxies of a namespace follow: the order both the aggregator and
//! `sextant check-config` apply.
//!
//! A rule applies to the proxies of the namespaces it is exported to
//! ([`Rule::exported_to`]). Among those that apply to a proxy of namespace
//! `N`, the lowest [`tier`] wins:
//! - a route rule of `N` itself comes before the others (a team's own
//!   VirtualService, or a GAMMA consumer route, overrides the service
//!   owner's for its own callers);
//! - a destination policy of `N`, then one of the service's namespace,
//!   then the others (Istio's DestinationRule lookup);
//! - within a tier, the first rule source in priority order, then the first
//!   by namespace and name; each other rule of the winner's tier is a
//!   conflict. A rule that loses only to a lower tier is not.
//!
//! A proxy of a namespace no rule names ([`named_namespaces`]) sees the
//! rules exported everywhere, ordered as for a proxy that names none.

use std::collections::BTreeSet;

use super::{Rule, RuleKind};

/// The tier of `rule` for the proxies of `ns`, for a host whose service is
/// of `service_namespace`: lower wins.
pub fn tier(rule: &Rule, ns: Option<&str>, service_namespace: Option<&str>) -> u8 {
    let own = Some(rule.key.namespace.as_str());
    if own == ns {
        0
    } else if rule.key.kind == RuleKind::Policy && own == service_namespace {
        1
    } else {
        2
    }
}

/// The namespaces for which the choice among `rules` may differ from that
/// of a namespace none of them names: each rule's own and those it is
/// exported to by name.
pub fn named_namespaces<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rules {
        if matches!(r.key.kind, RuleKind::Route | RuleKind::Policy) {
            out.insert(r.key.namespace.clone());
            out.extend(crate::export::named(r.export_to(), &r.key.namespace).map(str::to_owned));
        }
    }
    out
}

/// The candidate (of `candidates`, in source priority, then key order;
/// `rule` reads each one's rule) that the proxies of `ns` follow, and the
/// others of its tier: the conflicts.
pub fn choose<'a, T>(
    candidates: &'a [T],
    rule: impl Fn(&T) -> &Rule,
    ns: Option<&str>,
    service_namespace: Option<&str>,
) -> Option<(&'a T, Vec<&'a T>)> {
    let tier_of = |c: &T| {
        let r = rule(c);
        r.exported_to(ns).then(|| tier(r, ns, service_namespace))
    };
    let best = candidates.iter().filter_map(&tier_of).min()?;
    let mut same = candidates.iter().filter(|c| tier_of(c) == Some(best));
    let winner = same.next()?;
    Some((winner, same.collect()))
}
