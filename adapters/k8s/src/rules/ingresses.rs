//! The Ingresses of Sextant's class, merged into the ingress gateway
//! (see `gateway/ingress.rs`): their route rules, and one gateway rule
//! whose listeners are HTTP on 80 and HTTPS on 443 for each TLS host of
//! any of them. What is sent is diffed against what was, so one Ingress
//! changing sends its own rules and, if its TLS changed, the gateway.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use sextant_core::rules::GatewayRule;
use sextant_core::{Event, Rule, RuleKey};

use crate::K8sConfig;
use crate::gateway::ingress::{self, IngressRoutes};

type Key = (String, String);

/// The Ingresses read, and what of them was sent.
#[derive(Default)]
pub(super) struct Ingresses {
    /// Each Ingress of Sextant's class: what it gives (the last good, when
    /// it cannot be read now), and why not all of it is served.
    objects: BTreeMap<Key, (IngressRoutes, Option<String>)>,
    /// The rules sent (routes and the gateway), by key.
    sent: BTreeMap<RuleKey, Rule>,
    /// Problems reported, by object.
    reported: BTreeMap<String, String>,
}

/// What one [`Ingresses::update`] changes.
#[derive(Default)]
pub(super) struct IngressChanges {
    pub(super) events: Vec<Event<Rule>>,
    pub(super) problems: Vec<(String, String)>,
    pub(super) fixed: Vec<String>,
}

fn object_name(key: &Key) -> String {
    format!("Ingress {}/{}", key.0, key.1)
}

impl Ingresses {
    /// Records an Ingress's change (one not of Sextant's class, or no
    /// longer, is forgotten).
    pub(super) fn change(&mut self, config: &K8sConfig, obj: &DynamicObject, deleted: bool) {
        let key = (
            obj.metadata.namespace.clone().unwrap_or_default(),
            obj.metadata.name.clone().unwrap_or_default(),
        );
        let spec = obj.data.get("spec").cloned().unwrap_or_default();
        if deleted
            || !ingress::of_class(
                &config.ingress_class,
                &spec,
                obj.metadata.annotations.as_ref(),
            )
        {
            self.objects.remove(&key);
            return;
        }
        let converted = ingress::ingress(
            &config.mapping,
            &config.ingress_gateway,
            &key.0,
            &key.1,
            &spec,
        );
        let entry = match converted {
            Ok(c) => {
                let problem = (!c.unsupported.is_empty())
                    .then(|| format!("not served: {}", c.unsupported.join("; ")));
                (c, problem)
            }
            Err(reason) => {
                let last = self
                    .objects
                    .get(&key)
                    .map(|(c, _)| c.clone())
                    .unwrap_or_default();
                (
                    last,
                    Some(format!(
                        "cannot convert (its last good routes are kept): {reason}"
                    )),
                )
            }
        };
        self.objects.insert(key, entry);
    }

    /// The ingress gateway's rule, while any Ingress of the class exists.
    pub(super) fn gateway(&self, config: &K8sConfig) -> Option<Rule> {
        self.gateway_and_losers(config).0
    }

    /// The ingress gateway's rule, and the TLS hosts two Ingresses claim
    /// (the later one's Secret unused).
    fn gateway_and_losers(&self, config: &K8sConfig) -> (Option<Rule>, Vec<String>) {
        let tls: Vec<(Option<String>, String)> = self
            .objects
            .values()
            .flat_map(|(c, _)| c.tls.iter().cloned())
            .collect();
        let (listeners, lost) = ingress::listeners(&tls);
        let rule = match config.ingress_gateway.split_once('/') {
            Some((ns, name)) if !self.objects.is_empty() => {
                Some(Rule::gateway(ns, name, GatewayRule { listeners }))
            }
            _ => None,
        };
        (rule, lost)
    }

    /// Sends what the Ingresses give now and withdraws what they no longer
    /// do.
    pub(super) fn update(&mut self, config: &K8sConfig) -> IngressChanges {
        let mut wanted: BTreeMap<RuleKey, Rule> = BTreeMap::new();
        for (c, _) in self.objects.values() {
            for r in &c.rules {
                wanted.insert(r.key.clone(), r.clone());
            }
        }
        let (gateway, lost) = self.gateway_and_losers(config);
        if let Some(gw) = gateway {
            wanted.insert(gw.key.clone(), gw);
        }
        let mut out = IngressChanges::default();
        for (key, rule) in &wanted {
            if self.sent.get(key) != Some(rule) {
                out.events.push(Event::Apply(rule.clone()));
            }
        }
        for key in self.sent.keys().filter(|k| !wanted.contains_key(*k)) {
            out.events.push(Event::Delete(key.clone()));
        }
        self.sent = wanted;
        // Problems: each Ingress's own, and the TLS names two claim.
        let mut problems: BTreeMap<String, String> = self
            .objects
            .iter()
            .filter_map(|(k, (_, p))| Some((object_name(k), p.clone()?)))
            .collect();
        if !lost.is_empty() {
            problems.insert(
                format!("Ingress gateway {}", config.ingress_gateway),
                format!("TLS hosts claimed twice: {}", lost.join("; ")),
            );
        }
        for (object, reason) in &problems {
            if self.reported.get(object) != Some(reason) {
                out.problems.push((object.clone(), reason.clone()));
            }
        }
        for object in self.reported.keys().filter(|o| !problems.contains_key(*o)) {
            out.fixed.push(object.clone());
        }
        self.reported = problems;
        out
    }

    /// The rules sent (for a Reset).
    pub(super) fn rules(&self) -> impl Iterator<Item = Rule> + '_ {
        self.sent.values().cloned()
    }

    /// The problems reported (for a Reset).
    pub(super) fn problems(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.reported.iter().map(|(o, r)| (o.clone(), r.clone()))
    }

    /// The Ingresses of Sextant's class, by namespace and name.
    pub(super) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.objects.keys()
    }
}
