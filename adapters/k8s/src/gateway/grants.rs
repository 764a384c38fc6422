//! The `ReferenceGrant`s read: which kinds of which namespaces may refer
//! to the Services (routes' backends) and Secrets (Gateways'
//! certificates) of the grant's namespace.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::RouteKind;

pub(super) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GrantSpec {
    from: Vec<GrantFrom>,
    to: Vec<GrantTo>,
}

#[derive(Clone, Deserialize, PartialEq)]
struct GrantFrom {
    group: String,
    kind: String,
    namespace: String,
}

#[derive(Clone, Deserialize, PartialEq)]
struct GrantTo {
    group: String,
    kind: String,
    #[serde(default)]
    name: Option<String>,
}

/// The `ReferenceGrant`s read: which kinds of which namespaces may refer
/// to which Services of the grant's namespace.
#[derive(Clone, Default, PartialEq)]
pub struct Grants {
    /// (namespace, name) -> (from, to).
    grants: BTreeMap<(String, String), (Vec<GrantFrom>, Vec<GrantTo>)>,
}

impl Grants {
    /// Records (or replaces) the grant `namespace/name` from its spec.
    pub fn insert(&mut self, namespace: &str, name: &str, spec: &Value) -> Result<(), String> {
        let spec: GrantSpec =
            serde_json::from_value(spec.clone()).map_err(|e| format!("spec: {e}"))?;
        self.grants.insert(
            (namespace.to_owned(), name.to_owned()),
            (spec.from, spec.to),
        );
        Ok(())
    }

    /// Forgets the grant `namespace/name`.
    pub fn remove(&mut self, namespace: &str, name: &str) {
        self.grants.remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Whether a `kind` route of `from_ns` may send traffic to Service
    /// `to_ns/service`: always within a namespace, else by a grant there.
    pub fn permits(&self, kind: RouteKind, from_ns: &str, to_ns: &str, service: &str) -> bool {
        from_ns == to_ns
            || self
                .grants
                .range((to_ns.to_owned(), String::new())..)
                .take_while(|((ns, _), _)| ns == to_ns)
                .any(|(_, (from, to))| {
                    from.iter().any(|f| {
                        f.group == GATEWAY_GROUP && f.kind == kind.name() && f.namespace == from_ns
                    }) && to.iter().any(|t| {
                        t.group.is_empty()
                            && t.kind == "Service"
                            && t.name.as_deref().is_none_or(|n| n == service)
                    })
                })
    }
}

impl Grants {
    /// Whether the Gateways of `gateway_ns` may use Secret
    /// `secret_ns/secret` for their listeners: always within a namespace,
    /// else by a grant there.
    pub fn permits_secret(&self, gateway_ns: &str, secret_ns: &str, secret: &str) -> bool {
        gateway_ns == secret_ns
            || self
                .grants
                .range((secret_ns.to_owned(), String::new())..)
                .take_while(|((ns, _), _)| ns == secret_ns)
                .any(|(_, (from, to))| {
                    from.iter().any(|f| {
                        f.group == GATEWAY_GROUP && f.kind == "Gateway" && f.namespace == gateway_ns
                    }) && to.iter().any(|t| {
                        t.group.is_empty()
                            && t.kind == "Secret"
                            && t.name.as_deref().is_none_or(|n| n == secret)
                    })
                })
    }
}
