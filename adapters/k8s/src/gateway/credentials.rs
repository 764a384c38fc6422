//! The `kubernetes.io/tls` Secrets that Sextant's Gateways name, as
//! credential rules ([`sextant_core::rules::gateway::Credential`]): what
//! reaches the routers over SDS. Pure bookkeeping, no I/O.
//!
//! Every TLS Secret of the watched namespaces is read (its certificate and
//! key decoded, nothing else kept), but only those an HTTPS listener of a
//! Gateway of Sextant's class names become rules: the others never leave
//! this adapter. A Gateway that starts naming a Secret sends it, one that
//! stops (or is deleted) withdraws it; a Secret changed in place (a
//! rotation) sends its new certificate. A named Secret that cannot be read
//! (another type, data that is not PEM text) is a problem of that Secret,
//! retracted once it is fixed or no longer named; a named Secret that does
//! not exist is the router's problem ("credential NS/NAME not found"): the
//! listeners that name it are not served, the others are.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::api::DynamicObject;
use sextant_core::rules::gateway::{Credential, credential_ref};
use sextant_core::{Event, Rule, RuleKind};

type Key = (String, String);

/// The Secret type whose Secrets are read.
const TLS: &str = "kubernetes.io/tls";

/// The TLS Secrets read, and which became rules.
#[derive(Default)]
pub(crate) struct Credentials {
    /// Each TLS Secret: its credential, or why it cannot be one.
    secrets: BTreeMap<Key, Result<Credential, String>>,
    /// The credential rules sent.
    sent: BTreeMap<Key, Credential>,
    /// The problems reported, by Secret.
    reported: BTreeMap<Key, String>,
}

/// What one call of [`Credentials::update`] changes.
#[derive(Default)]
pub(crate) struct CredentialChanges {
    pub(crate) events: Vec<Event<Rule>>,
    /// `(object, reason)` of new problems.
    pub(crate) problems: Vec<(String, String)>,
    /// Objects whose problem is over.
    pub(crate) fixed: Vec<String>,
}

fn object_name(key: &Key) -> String {
    format!("Secret {}/{}", key.0, key.1)
}

/// A TLS Secret's credential, or why it cannot be one.
fn read(obj: &DynamicObject) -> Result<Credential, String> {
    let value = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    let secret: Secret = serde_json::from_value(value).map_err(|e| format!("not a Secret: {e}"))?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| -> Result<String, String> {
        let bytes = data
            .get(key)
            .ok_or_else(|| format!("it has no data.{key}"))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| format!("data.{key} is not PEM text"))
    };
    Ok(Credential {
        certificate_chain: text("tls.crt")?,
        private_key: sextant_core::Secret::new(text("tls.key")?),
        granted_to: Vec::new(),
    })
}

impl Credentials {
    /// Records a Secret's change (any type: one that stops being a TLS
    /// Secret is forgotten).
    pub(crate) fn change(
        &mut self,
        namespace: String,
        name: String,
        obj: &DynamicObject,
        deleted: bool,
    ) {
        let key = (namespace, name);
        let tls = obj.data.get("type").and_then(|t| t.as_str()) == Some(TLS);
        if deleted || !tls {
            self.secrets.remove(&key);
        } else {
            self.secrets.insert(key, read(obj));
        }
    }

    /// Sends the credentials that `rules`' gateways name now and withdraws
    /// those no longer named.
    pub(crate) fn update<'a>(
        &mut self,
        rules: impl Iterator<Item = &'a Rule>,
        grants: &crate::gateway::Grants,
    ) -> CredentialChanges {
        // Each Secret named, with the other namespaces whose Gateways may
        // use it (a ReferenceGrant in its namespace); one named without a
        // grant is not sent for them (the listener's status says so).
        let mut named: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
        for rule in rules {
            let Some(gw) = rule.as_gateway() else {
                continue;
            };
            let ns = rule.key.namespace.as_str();
            for tls in gw.listeners.iter().filter_map(|l| l.tls.as_ref()) {
                for r in &tls.certificate_refs {
                    let (rns, rname) = credential_ref(r, ns);
                    let key = (rns.to_owned(), rname.to_owned());
                    if rns == ns {
                        named.entry(key).or_default();
                    } else if grants.permits_secret(ns, rns, rname) {
                        named.entry(key).or_default().insert(ns.to_owned());
                    }
                }
            }
        }
        let mut out = CredentialChanges::default();
        let mut wanted: BTreeMap<Key, Credential> = BTreeMap::new();
        let mut problems: BTreeMap<Key, String> = BTreeMap::new();
        for (key, granted) in &named {
            match self.secrets.get(key) {
                Some(Ok(c)) => {
                    let mut c = c.clone();
                    c.granted_to = granted.iter().cloned().collect();
                    wanted.insert(key.clone(), c);
                }
                Some(Err(reason)) => {
                    problems.insert(
                        key.clone(),
                        format!(
                            "a Gateway names this {TLS} Secret but it cannot be read: {reason}"
                        ),
                    );
                }
                None => {}
            }
        }
        for (key, c) in &wanted {
            if self.sent.get(key) != Some(c) {
                out.events.push(Event::Apply(Rule::credential(
                    key.0.clone(),
                    key.1.clone(),
                    c.clone(),
                )));
            }
        }
        for key in self.sent.keys().filter(|k| !wanted.contains_key(*k)) {
            out.events.push(Event::Delete(sextant_core::RuleKey::new(
                RuleKind::Credential,
                key.0.clone(),
                key.1.clone(),
            )));
        }
        for (key, reason) in &problems {
            if self.reported.get(key) != Some(reason) {
                out.problems.push((object_name(key), reason.clone()));
            }
        }
        for key in self.reported.keys().filter(|k| !problems.contains_key(*k)) {
            out.fixed.push(object_name(key));
        }
        self.sent = wanted;
        self.reported = problems;
        out
    }

    /// Whether the TLS Secret `namespace/name` is there and readable (not
    /// whether a Gateway may use it: see [`crate::gateway::Grants`]).
    pub(crate) fn readable(&self, namespace: &str, name: &str) -> bool {
        matches!(
            self.secrets.get(&(namespace.to_owned(), name.to_owned())),
            Some(Ok(_))
        )
    }

    /// The credential rules sent (for a Reset).
    pub(crate) fn rules(&self) -> impl Iterator<Item = Rule> + '_ {
        self.sent
            .iter()
            .map(|((ns, name), c)| Rule::credential(ns.clone(), name.clone(), c.clone()))
    }

    /// The problems reported (for a Reset).
    pub(crate) fn problems(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.reported
            .iter()
            .map(|(k, reason)| (object_name(k), reason.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_core::rules::gateway::{
        AllowedRoutes, GatewayListener, GatewayProtocol, GatewayRule, ListenerTls,
    };

    fn secret(ns: &str, name: &str, kind: &str, crt: &str) -> DynamicObject {
        use k8s_openapi::ByteString;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some(kind.into()),
            data: Some(BTreeMap::from([
                ("tls.crt".to_owned(), ByteString(crt.as_bytes().to_vec())),
                ("tls.key".to_owned(), ByteString(b"KEY".to_vec())),
            ])),
            ..Default::default()
        };
        serde_json::from_value(serde_json::to_value(secret).expect("serializes")).expect("a Secret")
    }

    fn gateway(ns: &str, refs: &[&str]) -> Rule {
        Rule::gateway(
            ns,
            "public",
            GatewayRule {
                listeners: vec![GatewayListener {
                    name: "https".into(),
                    port: 443,
                    protocol: GatewayProtocol::Https,
                    hostname: None,
                    allowed_routes: AllowedRoutes::default(),
                    tls: Some(ListenerTls {
                        certificate_refs: refs.iter().map(|r| r.to_string()).collect(),
                    }),
                }],
            },
        )
    }

    fn applied(c: &CredentialChanges) -> Vec<(String, String)> {
        c.events
            .iter()
            .filter_map(|e| match e {
                Event::Apply(r) => Some((
                    r.key.name.clone(),
                    r.as_credential()?.certificate_chain.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    fn deleted(c: &CredentialChanges) -> Vec<String> {
        c.events
            .iter()
            .filter_map(|e| match e {
                Event::Delete(k) => Some(k.name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Only named TLS Secrets become rules; a rotation resends, a Gateway
    /// that stops naming one withdraws it; an unreadable named Secret is a
    /// problem until it is fixed.
    #[test]
    fn only_the_secrets_gateways_name_become_credentials() {
        let mut c = Credentials::default();
        for (name, kind) in [("a", TLS), ("b", TLS), ("opaque", "Opaque")] {
            c.change(
                "edge".into(),
                name.into(),
                &secret("edge", name, kind, name),
                false,
            );
        }
        c.change(
            "shop".into(),
            "a".into(),
            &secret("shop", "a", TLS, "shop-a"),
            false,
        );
        let gw = gateway("edge", &["a", "opaque", "missing"]);
        let first = c.update([&gw].into_iter(), &Default::default());
        assert_eq!(applied(&first), vec![("a".to_owned(), "a".to_owned())]);
        assert!(first.problems.is_empty(), "{:?}", first.problems);
        // Nothing changed: nothing sent.
        let again = c.update([&gw].into_iter(), &Default::default());
        assert!(again.events.is_empty() && again.problems.is_empty());
        // A rotation.
        c.change(
            "edge".into(),
            "a".into(),
            &secret("edge", "a", TLS, "a2"),
            false,
        );
        let rotated = c.update([&gw].into_iter(), &Default::default());
        assert_eq!(applied(&rotated), vec![("a".to_owned(), "a2".to_owned())]);
        // A broken named Secret: a problem, its last rule kept out.
        let mut broken = secret("edge", "b", TLS, "b");
        broken.data["data"]
            .as_object_mut()
            .expect("data")
            .remove("tls.key");
        c.change("edge".into(), "b".into(), &broken, false);
        let gw2 = gateway("edge", &["b"]);
        let switched = c.update([&gw2].into_iter(), &Default::default());
        assert_eq!(deleted(&switched), vec!["a".to_owned()]);
        assert_eq!(switched.problems.len(), 1, "{:?}", switched.problems);
        assert!(switched.problems[0].1.contains("no data.tls.key"));
        c.change(
            "edge".into(),
            "b".into(),
            &secret("edge", "b", TLS, "b"),
            false,
        );
        let fixed = c.update([&gw2].into_iter(), &Default::default());
        assert_eq!(fixed.fixed, vec!["Secret edge/b".to_owned()]);
        assert_eq!(applied(&fixed), vec![("b".to_owned(), "b".to_owned())]);
        assert_eq!(c.rules().count(), 1);
        // The Gateway deleted.
        let gone = c.update(std::iter::empty(), &Default::default());
        assert_eq!(deleted(&gone), vec!["b".to_owned()]);
        // Another namespace's Secret: sent only with a grant there, and
        // then granted to the Gateway's namespace.
        let far = gateway("edge", &["shop/a"]);
        let refused = c.update([&far].into_iter(), &Default::default());
        assert!(applied(&refused).is_empty());
        let mut grants = crate::gateway::Grants::default();
        grants
            .insert(
                "shop",
                "to-edge",
                &serde_json::json!({
                    "from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "edge"}],
                    "to": [{"group": "", "kind": "Secret", "name": "a"}],
                }),
            )
            .expect("a grant");
        let granted = c.update([&far].into_iter(), &grants);
        let sent: Vec<Vec<String>> = granted
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Apply(r) => Some(r.as_credential()?.granted_to.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(sent, [vec!["edge".to_owned()]]);
    }
}
