//! Peer authentication: what a workload's sidecar accepts inbound (Istio's
//! `PeerAuthentication`, `security.istio.io`).
//!
//! A [`PeerAuthRule`] lives in a namespace. In the root namespace without
//! a selector it is the mesh's; elsewhere without a selector its
//! namespace's; with a selector, the workloads it selects'. Its mode
//! applies to every port of the workload, and `portLevelMtls` (with a
//! selector only) to single ports. `UNSET` (or no mode) inherits from the
//! level above: the workload's rule from its namespace's, that from the
//! mesh's, that from the server's default (`--mtls-mode`). Like scope
//! rules, it binds to no service: the xDS server picks, per proxy, the
//! rules in force ([`select`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Rule;
use crate::model::Labels;

/// A mode of mutual TLS inbound.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the level above.
    Unset,
    /// Mutual TLS from sidecars, plaintext from others.
    Permissive,
    /// Mutual TLS only.
    Strict,
    /// Plaintext only.
    Disable,
}

/// What a peer authentication rule says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthRule {
    /// The workloads it applies to, by labels; empty: every workload of its
    /// namespace (or of the mesh, in the root namespace).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: Labels,
    /// The mode for every port.
    pub mode: MtlsMode,
    /// Modes of single ports (the workload's port numbers).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level: BTreeMap<u32, MtlsMode>,
}

impl PeerAuthRule {
    /// Whether it applies to a workload with `labels` (its namespace
    /// already matched).
    pub fn selects(&self, labels: &Labels) -> bool {
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// The modes in force for one workload, after inheritance: `None` where
/// every level left it to the server's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerModes {
    /// The mode of every port.
    pub mode: Option<MtlsMode>,
    /// Ports with their own mode.
    pub ports: BTreeMap<u32, MtlsMode>,
    /// The rules that decided (`namespace/name`), mesh first.
    pub from: Vec<String>,
}

impl PeerModes {
    /// The mode of `port`, or `default`.
    pub fn of(&self, port: u32, default: MtlsMode) -> MtlsMode {
        self.ports
            .get(&port)
            .copied()
            .or(self.mode)
            .unwrap_or(default)
    }
}

/// The modes in force for a workload of `namespace` with `labels`, from
/// `rules` (any kinds; the peer authentication rules among them are read)
/// in precedence order: the root namespace's rule without a selector, then
/// the namespace's rule without a selector, then the first of the
/// namespace's rules whose selector matches, each setting what it does not
/// leave UNSET.
pub fn select(
    rules: &[Arc<Rule>],
    root_namespace: &str,
    namespace: Option<&str>,
    labels: &Labels,
) -> PeerModes {
    let peer = || {
        rules
            .iter()
            .filter_map(|r| r.as_peer_auth().map(|p| (r, p)))
    };
    let mut out = PeerModes::default();
    let mut apply = |r: &Arc<Rule>, p: &PeerAuthRule, ports: bool| {
        if p.mode != MtlsMode::Unset {
            out.mode = Some(p.mode);
        }
        if ports {
            for (port, mode) in &p.port_level {
                if *mode != MtlsMode::Unset {
                    out.ports.insert(*port, *mode);
                }
            }
        }
        out.from.push(format!("{}/{}", r.key.namespace, r.key.name));
    };
    if let Some((r, p)) =
        peer().find(|(r, p)| r.key.namespace == root_namespace && p.selector.is_empty())
    {
        apply(r, p, false);
    }
    if let Some(ns) = namespace.filter(|ns| *ns != root_namespace)
        && let Some((r, p)) = peer().find(|(r, p)| r.key.namespace == ns && p.selector.is_empty())
    {
        apply(r, p, false);
    }
    if let Some(ns) = namespace
        && let Some((r, p)) = peer()
            .find(|(r, p)| r.key.namespace == ns && !p.selector.is_empty() && p.selects(labels))
    {
        apply(r, p, true);
    }
    out
}

/// A peer authentication rule as a file or an etcd document writes it:
/// Istio's `PeerAuthentication` spec beside a name and namespace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthEntry {
    /// The rule's name.
    pub name: String,
    /// Its namespace (the root namespace's rule without a selector is the
    /// mesh's).
    #[serde(default = "super::default_namespace")]
    pub namespace: String,
    /// Istio's `selector`.
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// Istio's `mtls`.
    #[serde(default)]
    pub mtls: Option<ModeEntry>,
    /// Istio's `portLevelMtls`: port number to mode.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<u32, ModeEntry>,
}

/// `matchLabels`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels a workload must carry, all of them.
    #[serde(default)]
    pub match_labels: Labels,
}

/// `{mode: ...}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeEntry {
    /// The mode [default: UNSET].
    #[serde(default = "unset")]
    pub mode: MtlsMode,
}

fn unset() -> MtlsMode {
    MtlsMode::Unset
}

impl From<PeerAuthEntry> for Rule {
    fn from(e: PeerAuthEntry) -> Rule {
        Rule::peer_auth(
            e.namespace,
            e.name,
            PeerAuthRule {
                selector: e.selector.map(|s| s.match_labels).unwrap_or_default(),
                mode: e.mtls.map_or(MtlsMode::Unset, |m| m.mode),
                port_level: e
                    .port_level_mtls
                    .into_iter()
                    .map(|(p, m)| (p, m.mode))
                    .collect(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Arc<Rule> {
        Arc::new(Rule::from(
            serde_yaml_ng::from_str::<PeerAuthEntry>(yaml).unwrap_or_else(|e| panic!("{e}")),
        ))
    }

    #[test]
    fn the_nearest_level_wins_and_unset_inherits() {
        let rules = [
            rule("name: default\nnamespace: istio-system\nmtls: {mode: STRICT}\n"),
            rule("name: shop\nnamespace: shop\nmtls: {mode: PERMISSIVE}\n"),
            rule(
                "name: web\nnamespace: shop\nselector: {matchLabels: {app: web}}\nmtls: {mode: UNSET}\nportLevelMtls: {8080: {mode: DISABLE}}\n",
            ),
        ];
        let labels = |app: &str| Labels::from([("app".to_owned(), app.to_owned())]);
        // The web workload: the namespace's PERMISSIVE (its own rule leaves
        // the mode UNSET), 8080 in plaintext.
        let web = select(&rules, "istio-system", Some("shop"), &labels("web"));
        assert_eq!(web.of(80, MtlsMode::Permissive), MtlsMode::Permissive);
        assert_eq!(web.of(8080, MtlsMode::Permissive), MtlsMode::Disable);
        assert_eq!(web.from, ["istio-system/default", "shop/shop", "shop/web"]);
        // Another workload of shop: the namespace's.
        let db = select(&rules, "istio-system", Some("shop"), &labels("db"));
        assert_eq!(db.of(8080, MtlsMode::Disable), MtlsMode::Permissive);
        // Another namespace: the mesh's.
        let other = select(&rules, "istio-system", Some("other"), &labels("web"));
        assert_eq!(other.of(80, MtlsMode::Permissive), MtlsMode::Strict);
        // No rule at all: the server's default.
        let none = select(&[], "istio-system", Some("shop"), &labels("web"));
        assert_eq!(none, PeerModes::default());
        assert_eq!(none.of(80, MtlsMode::Disable), MtlsMode::Disable);
    }

    #[test]
    fn entries_refuse_unknown_modes_and_fields() {
        assert!(
            serde_yaml_ng::from_str::<PeerAuthEntry>("name: a\nmtls: {mode: LOOSE}\n").is_err()
        );
        assert!(
            serde_yaml_ng::from_str::<PeerAuthEntry>("name: a\nmtl: {mode: STRICT}\n").is_err()
        );
    }
}
