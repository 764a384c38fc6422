//! Which route rule and destination policy are in force for a host, for
//! the proxies of each namespace, in the order
//! [`sextant_core::rules::precedence`] defines (`exportTo`, the proxy's own
//! namespace first, a policy of the service's namespace next, then source
//! priority and name).
//!
//! A proxy of a namespace no rule names sees the rules exported
//! everywhere: that choice is the service's own rules. Each named
//! namespace whose choice differs gets a variant ([`NamespacedRules`]);
//! namespaces that choose alike share one. A host's route rule also sends
//! to other hosts, whose policies go into its routes: the namespaces
//! their policies name count too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sextant_core::{
    Conflict, ConflictField, Hostname, NamespacedRules, RegistryId, Rule, RuleKey, RuleKind,
};

use sextant_core::rules::precedence;

use super::{MergeState, destinations};

/// The rules one namespace's proxies see for a host.
#[derive(Default, PartialEq)]
pub(super) struct Choice {
    pub(super) rules: Vec<Arc<Rule>>,
    pub(super) destination_policies: Vec<Arc<Rule>>,
    pub(super) destination_ports: BTreeMap<Hostname, u32>,
}

/// The conflicts found for one host, each pair of rules once.
#[derive(Default)]
struct Conflicts {
    list: Vec<Conflict>,
    /// (winner's source, winner, loser's source, loser).
    seen: BTreeSet<(RegistryId, RuleKey, RegistryId, RuleKey)>,
}

/// The most namespaces one host's rules may name before the rest are
/// served the default choice (a bound on the work of one merge).
const MAX_NAMED_NAMESPACES: usize = 1024;

impl MergeState {
    /// The rules in force for `hostname`: for every proxy, for the
    /// namespaces that see others, and the conflicts among them.
    pub(super) fn rules_for(
        &self,
        hostname: &Hostname,
    ) -> (Choice, Vec<Arc<NamespacedRules>>, Vec<Conflict>) {
        let mut conflicts = Conflicts::default();
        let default = self.choice(hostname, None, &mut conflicts);
        let mut variants: Vec<(BTreeSet<String>, Choice)> = Vec::new();
        for ns in self.named_namespaces(hostname) {
            let choice = self.choice(hostname, Some(&ns), &mut conflicts);
            if choice == default {
                continue;
            }
            match variants.iter_mut().find(|(_, c)| *c == choice) {
                Some((namespaces, _)) => {
                    namespaces.insert(ns);
                }
                None => variants.push((BTreeSet::from([ns]), choice)),
            }
        }
        let namespaced = variants
            .into_iter()
            .map(|(namespaces, c)| {
                Arc::new(NamespacedRules {
                    namespaces,
                    rules: c.rules,
                    destination_policies: c.destination_policies,
                    destination_ports: c.destination_ports,
                })
            })
            .collect();
        (default, namespaced, conflicts.list)
    }

    /// The choice of the proxies of `ns` (`None`: of a namespace no rule
    /// names), adding the conflicts found to `conflicts` (once each).
    fn choice(&self, host: &Hostname, ns: Option<&str>, conflicts: &mut Conflicts) -> Choice {
        let route = self.choose(host, RuleKind::Route, ns, Some(conflicts));
        let policy = self.choose(host, RuleKind::Policy, ns, Some(conflicts));
        let destination_policies = route
            .iter()
            .flat_map(|r| destinations(r))
            .filter(|d| *d != host)
            .filter_map(|d| self.choose(d, RuleKind::Policy, ns, None))
            .collect();
        let destination_ports = self.destination_ports(host, route.as_deref());
        Choice {
            rules: route.into_iter().chain(policy).collect(),
            destination_policies,
            destination_ports,
        }
    }

    /// The rule of `kind` in force for `host` for the proxies of `ns`
    /// (see the module's text); the losers of the winner's tier are added
    /// to `conflicts` when given.
    fn choose(
        &self,
        host: &Hostname,
        kind: RuleKind,
        ns: Option<&str>,
        conflicts: Option<&mut Conflicts>,
    ) -> Option<Arc<Rule>> {
        let candidates: Vec<(&RegistryId, &Arc<Rule>)> = self
            .rule_shards
            .iter()
            .flat_map(|s| {
                s.naming(host)
                    .filter(move |r| r.key.kind == kind)
                    .map(move |r| (&s.id, r))
            })
            .collect();
        let service_ns = self.service_namespace(host);
        let (&(winner_id, winner), same_tier) =
            precedence::choose(&candidates, |c| c.1, ns, service_ns)?;
        if let Some(conflicts) = conflicts {
            for &(id, loser) in same_tier {
                let pair = (
                    winner_id.clone(),
                    winner.key.clone(),
                    id.clone(),
                    loser.key.clone(),
                );
                if conflicts.seen.insert(pair) {
                    conflicts
                        .list
                        .push(conflict(host, (winner_id, winner), (id, loser), ns));
                }
            }
        }
        Some(Arc::clone(winner))
    }

    /// The namespace of `host`'s service (from the first registry that
    /// has it), if there is one.
    fn service_namespace(&self, host: &Hostname) -> Option<&str> {
        self.shards
            .iter()
            .find_map(|s| s.services.get(host))
            .map(|s| s.namespace.as_str())
    }

    /// The namespaces the rules that decide `host`'s configuration name:
    /// their own and those they are exported to by name, of the rules
    /// naming it and of the policies of the hosts its route rules send to.
    fn named_namespaces(&self, host: &Hostname) -> BTreeSet<String> {
        let naming = || self.rule_shards.iter().flat_map(|s| s.naming(host));
        let destination_policies = naming().flat_map(|r| destinations(r)).flat_map(|d| {
            self.rule_shards
                .iter()
                .flat_map(|s| s.naming(d))
                .filter(|p| p.key.kind == RuleKind::Policy)
        });
        let mut out =
            precedence::named_namespaces(naming().chain(destination_policies).map(|r| &**r));
        if out.len() > MAX_NAMED_NAMESPACES {
            tracing::warn!(%host, named = out.len(), max = MAX_NAMED_NAMESPACES, "the rules of a host name more namespaces than are given rules of their own; the others get the rules exported everywhere");
            out = out.into_iter().take(MAX_NAMED_NAMESPACES).collect();
        }
        out
    }

    /// The single port of each other host the route rule sends to (see
    /// [`sextant_core::MeshService::destination_ports`]).
    fn destination_ports(&self, host: &Hostname, route: Option<&Rule>) -> BTreeMap<Hostname, u32> {
        let Some(route) = route else {
            return BTreeMap::new();
        };
        destinations(route)
            .into_iter()
            .filter(|d| *d != host)
            .filter_map(|d| {
                let ms = self.merged.get(d)?;
                match ms.service.ports.as_slice() {
                    [only] => Some((d.clone(), only.port)),
                    _ => None,
                }
            })
            .collect()
    }
}

fn conflict(
    host: &Hostname,
    (winner_id, winner): (&RegistryId, &Arc<Rule>),
    (id, loser): (&RegistryId, &Arc<Rule>),
    ns: Option<&str>,
) -> Conflict {
    let (whose, there) = match ns {
        None => (String::new(), "for this host".to_owned()),
        Some(ns) => (
            format!(" for the proxies of namespace {ns}"),
            "there".to_owned(),
        ),
    };
    Conflict {
        hostname: host.clone(),
        winner: winner_id.clone(),
        other: id.clone(),
        field: match loser.key.kind {
            RuleKind::Route => ConflictField::RouteRule,
            // Per-proxy rules name no host, so never meet here.
            RuleKind::Policy
            | RuleKind::Scope
            | RuleKind::PeerAuth
            | RuleKind::Authz
            | RuleKind::Gateway
            | RuleKind::Credential => ConflictField::DestinationPolicy,
        },
        detail: format!(
            "{} from {winner_id} is in force{whose}; {} from {id} is ignored {there}",
            winner.key, loser.key
        ),
        endpoints_dropped: 0,
    }
}
