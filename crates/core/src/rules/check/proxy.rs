//! The per-proxy rules: scope rules (Sidecar), peer authentication and
//! authorization policies.

use super::*;

/// Labels one workload selector may require.
pub const MAX_SELECTOR_LABELS: usize = 64;

/// The most ingress listeners one scope rule declares.
const MAX_INGRESS: usize = 64;

pub(super) fn scope(c: &mut Checker<'_>, s: &crate::rules::ScopeRule) {
    // No hosts keeps the default hosts, which only a rule that sets its
    // outbound policy means; else it reads as "hide every host", whose
    // spelling is `~/*`, written on purpose.
    if s.hosts.is_empty() && s.outbound.is_none() && s.ingress.is_empty() {
        c.bad(
            "hosts",
            "must list at least one NAMESPACE/HOST entry (\"~/*\" for none), or set outboundTrafficPolicy or ingress",
        );
    }
    c.count("hosts", s.hosts.len(), MAX_HOSTS);
    if c.count("ingress", s.ingress.len(), MAX_INGRESS) {
        let mut seen = std::collections::BTreeSet::new();
        for (i, l) in s.ingress.iter().enumerate() {
            if !(1..=65535).contains(&l.port.number) {
                c.bad(format!("ingress[{i}].port.number"), "must be 1-65535");
            } else if !seen.insert(l.port.number) {
                c.bad(
                    format!("ingress[{i}].port.number"),
                    "another ingress listener has this port",
                );
            }
            if let Err(e) = l.deliver() {
                c.bad(format!("ingress[{i}].defaultEndpoint"), e);
            }
        }
    }
    c.count(
        "workloadSelector.labels",
        s.workload_selector.len(),
        MAX_SELECTOR_LABELS,
    );
}

pub(super) fn peer_auth(c: &mut Checker<'_>, p: &crate::rules::PeerAuthRule) {
    c.count(
        "selector.matchLabels",
        p.selector.len(),
        MAX_SELECTOR_LABELS,
    );
    if !p.port_level.is_empty() && p.selector.is_empty() {
        c.bad(
            "portLevelMtls",
            "needs a selector (as in Istio: ports belong to workloads)",
        );
    }
    if c.count("portLevelMtls", p.port_level.len(), MAX_PER_ROUTE) {
        for port in p.port_level.keys() {
            c.port(&format!("portLevelMtls[{port}]"), *port);
        }
    }
}

pub(super) fn authz(c: &mut Checker<'_>, a: &crate::rules::AuthzRule) {
    c.count(
        "selector.matchLabels",
        a.selector.len(),
        MAX_SELECTOR_LABELS,
    );
    if !c.count("rules", a.rules.len(), MAX_ROUTES) {
        return;
    }
    for (i, r) in a.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        for (j, f) in r.from.iter().enumerate() {
            let s = &f.source;
            for (k, block) in s.ip_blocks.iter().chain(&s.not_ip_blocks).enumerate() {
                if crate::rules::authz_cidr(block).is_none() {
                    c.bad(
                        format!("{at}.from[{j}].source.ipBlocks[{k}]"),
                        format!("{block:?} is not an IP or IP/PREFIX"),
                    );
                }
            }
        }
        for (j, t) in r.to.iter().enumerate() {
            let o = &t.operation;
            for (k, p) in o.ports.iter().chain(&o.not_ports).enumerate() {
                if !p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n)) {
                    c.bad(
                        format!("{at}.to[{j}].operation.ports[{k}]"),
                        format!("{p:?} is not a port number"),
                    );
                }
            }
        }
        for (j, w) in r.when.iter().enumerate() {
            if w.header().is_none()
                && !crate::rules::authz::CONDITION_KEYS.contains(&w.key.as_str())
            {
                c.bad(
                    format!("{at}.when[{j}].key"),
                    format!(
                        "{:?} is not served: request.headers[NAME], {}",
                        w.key,
                        crate::rules::authz::CONDITION_KEYS.join(", ")
                    ),
                );
            }
            if w.values.is_empty() && w.not_values.is_empty() {
                c.bad(format!("{at}.when[{j}]"), "needs values or notValues");
            }
        }
    }
}
