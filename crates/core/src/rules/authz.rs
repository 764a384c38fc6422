//! Authorization: which requests a workload's sidecar lets through
//! (Istio's `AuthorizationPolicy`, `security.istio.io`).
//!
//! An [`AuthzRule`] lives in a namespace and applies to the workloads it
//! selects there (all of them without a selector); in the root namespace it
//! applies to the selected workloads of every namespace. Evaluated as
//! Istio does: a request that a DENY policy matches is refused; else, when
//! any ALLOW policy applies to the workload, only a request that one of
//! them matches passes; with no ALLOW policy, everything passes. A policy
//! matches when any of its rules does; a rule when each of its parts
//! (`from`, `to`, `when`) does; a part's list when any entry does; an
//! entry when every field it sets does. An ALLOW policy without rules
//! matches nothing (Istio's "allow nothing"). Like scope rules, it binds to
//! no service: the xDS server picks the policies of each workload
//! ([`select`]) and compiles them into Envoy's RBAC filters.

use std::sync::Arc;

use super::Rule;
use crate::model::Labels;

/// ALLOW or DENY.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    /// Requests it matches may pass.
    #[default]
    Allow,
    /// Requests it matches are refused.
    Deny,
}

/// One authorization policy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzRule {
    /// The workloads, by labels; empty: every workload in reach.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub selector: Labels,
    /// What a match means.
    #[serde(default)]
    pub action: AuthzAction,
    /// The rules; a request matches the policy when it matches any.
    #[serde(default)]
    pub rules: Vec<AuthzMatch>,
}

/// One rule: `from`, `to` and `when` must all match (an absent part
/// matches anything).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzMatch {
    /// Any of these sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FromEntry>,
    /// Any of these operations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<ToEntry>,
    /// Every one of these conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// `from: [{source: ...}]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromEntry {
    /// The source.
    pub source: Source,
}

/// Who sends the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities, `TRUST_DOMAIN/ns/NS/sa/SA` (mutual TLS); `*` as a
    /// prefix or suffix wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Identities it must not be.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// The peer's namespaces (from its identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces it must not be from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// The peer's address, `IP` or `IP/PREFIX`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Addresses it must not have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
}

/// `to: [{operation: ...}]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToEntry {
    /// The operation.
    pub operation: Operation,
}

/// What the request does.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Host headers (`*` as a prefix or suffix wildcard). HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Hosts it must not be for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Methods. HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Methods it must not use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Paths (`*` as a prefix or suffix wildcard). HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Paths it must not be for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
    /// The workload's ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Ports it must not be for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
}

impl Operation {
    /// Whether it reads what only HTTP has.
    pub fn http_only(&self) -> bool {
        !(self.hosts.is_empty()
            && self.not_hosts.is_empty()
            && self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty())
    }
}

/// `when: [{key, values, notValues}]`. Served keys:
/// `request.headers[NAME]` (HTTP only), `source.namespace`,
/// `source.principal`, `source.ip`, `destination.port`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// What is tested.
    pub key: String,
    /// Any of these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// None of these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// The condition keys served, beside `request.headers[NAME]`.
pub const CONDITION_KEYS: [&str; 4] = [
    "source.namespace",
    "source.principal",
    "source.ip",
    "destination.port",
];

impl Condition {
    /// The header a `request.headers[NAME]` key tests.
    pub fn header(&self) -> Option<&str> {
        self.key
            .strip_prefix("request.headers[")?
            .strip_suffix(']')
            .filter(|h| !h.is_empty())
    }
}

impl AuthzRule {
    /// Whether it applies to a workload with `labels` (its namespace
    /// already matched).
    pub fn selects(&self, labels: &Labels) -> bool {
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// The authorization policies of a workload of `namespace` with `labels`,
/// from `rules` (any kinds; the authorization policies among them are
/// read), in precedence order: its namespace's and the root namespace's
/// whose selector is empty or matches.
pub fn select(
    rules: &[Arc<Rule>],
    root_namespace: &str,
    namespace: Option<&str>,
    labels: &Labels,
) -> Vec<Arc<Rule>> {
    rules
        .iter()
        .filter(|r| {
            r.as_authz().is_some_and(|a| {
                (r.key.namespace == root_namespace || Some(r.key.namespace.as_str()) == namespace)
                    && a.selects(labels)
            })
        })
        .cloned()
        .collect()
}

/// An authorization policy as a file or an etcd document writes it:
/// Istio's `AuthorizationPolicy` spec beside a name and namespace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzEntry {
    /// The policy's name.
    pub name: String,
    /// Its namespace (the root namespace's apply mesh-wide).
    #[serde(default = "super::default_namespace")]
    pub namespace: String,
    /// Istio's `selector`.
    #[serde(default)]
    pub selector: Option<super::peer::LabelSelector>,
    /// ALLOW (the default) or DENY.
    #[serde(default)]
    pub action: AuthzAction,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<AuthzMatch>,
}

impl From<AuthzEntry> for Rule {
    fn from(e: AuthzEntry) -> Rule {
        Rule::authz(
            e.namespace,
            e.name,
            AuthzRule {
                selector: e.selector.map(|s| s.match_labels).unwrap_or_default(),
                action: e.action,
                rules: e.rules,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Arc<Rule> {
        Arc::new(Rule::from(
            serde_yaml_ng::from_str::<AuthzEntry>(yaml).unwrap_or_else(|e| panic!("{e}")),
        ))
    }

    #[test]
    fn policies_of_the_namespace_and_the_root_apply_by_selector() {
        let rules = [
            rule(
                "name: mesh\nnamespace: istio-system\naction: DENY\nrules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]\n",
            ),
            rule(
                "name: web\nnamespace: shop\nselector: {matchLabels: {app: web}}\nrules: [{from: [{source: {namespaces: [shop]}}]}]\n",
            ),
            rule("name: all\nnamespace: shop\nrules: [{}]\n"),
            rule("name: db\nnamespace: other\nrules: [{}]\n"),
        ];
        let labels = |app: &str| Labels::from([("app".to_owned(), app.to_owned())]);
        let names =
            |v: Vec<Arc<Rule>>| -> Vec<String> { v.iter().map(|r| r.key.name.clone()).collect() };
        assert_eq!(
            names(select(&rules, "istio-system", Some("shop"), &labels("web"))),
            ["mesh", "web", "all"]
        );
        assert_eq!(
            names(select(&rules, "istio-system", Some("shop"), &labels("db"))),
            ["mesh", "all"]
        );
        assert_eq!(
            names(select(&rules, "istio-system", None, &labels("web"))),
            ["mesh"]
        );
        let deny = rules[0].as_authz().expect("authz");
        assert_eq!(deny.action, AuthzAction::Deny);
    }

    #[test]
    fn entries_refuse_unknown_fields_and_actions() {
        assert!(serde_yaml_ng::from_str::<AuthzEntry>("name: a\naction: AUDIT\n").is_err());
        assert!(
            serde_yaml_ng::from_str::<AuthzEntry>(
                "name: a\nrules: [{from: [{source: {principal: x}}]}]\n"
            )
            .is_err()
        );
        let c = Condition {
            key: "request.headers[x-user]".into(),
            ..Default::default()
        };
        assert_eq!(c.header(), Some("x-user"));
    }
}
