//! What one connected client holds against what the newest snapshot would
//! give it now, resource by resource: the answer to "why is this proxy
//! BEHIND" (`sextant status NODE`, `/debug/proxydiff`).
//!
//! The server's mirror of a connection keeps counts and versions per type,
//! not what the client holds name by name (that would double every
//! connection's bookkeeping); the connection's own task copies it out when
//! asked, between two of its steps.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::conn::HeldNow;
use super::{XdsServer, lock};
use crate::resource::ResourceType;

/// Differing resources listed at most per type (the rest are counted).
pub const MAX_DIFFERENCES: usize = 1_000;

/// One client's held configuration against the newest.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyDiff {
    /// Its node id.
    pub node_id: String,
    /// The newest snapshot's generation, compared against.
    pub generation: u64,
    /// Per type it subscribes to, in push order.
    pub types: Vec<TypeDiff>,
}

/// One type of a [`ProxyDiff`].
#[derive(Clone, Debug, Serialize)]
pub struct TypeDiff {
    /// The type.
    #[serde(rename = "type")]
    pub kind: ResourceType,
    /// Resources held at the newest version.
    pub same: usize,
    /// Resources that differ, by name (at most [`MAX_DIFFERENCES`]).
    pub differences: Vec<ResourceDiff>,
    /// Differing resources left out of `differences`.
    pub more: usize,
}

/// One resource that differs.
#[derive(Clone, Debug, Serialize)]
pub struct ResourceDiff {
    /// Its name.
    pub name: String,
    /// The version the client acknowledged (none: it does not hold it).
    pub held: Option<String>,
    /// The version the newest snapshot gives it (none: it would be
    /// removed, or the client asked for a name that does not exist).
    pub newest: Option<String>,
    /// A response changing it is sent and not yet acknowledged.
    pub in_flight: bool,
    /// The client rejected this version (a NACK); it keeps `held`.
    pub rejected: bool,
}

/// Why a difference cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// No connected client has that node id.
    #[error("no proxy {0:?} is connected here")]
    NotConnected(String),
    /// The connection did not answer in time (it is busy or ending).
    #[error("the connection of {0:?} did not answer within {1:?}")]
    NoAnswer(String, Duration),
}

impl XdsServer {
    /// What the client with node id `node` holds against the newest
    /// snapshot (its first connection when it has several). Waits at most
    /// `bound` for the connection to copy out what it holds.
    pub async fn proxy_diff(&self, node: &str, bound: Duration) -> Result<ProxyDiff, DiffError> {
        let snap = self.snapshot();
        let registered = lock(&self.shared.connections)
            .values()
            .find(|r| r.node_id() == node)
            .cloned()
            .ok_or_else(|| DiffError::NotConnected(node.to_owned()))?;
        let held = registered
            .ask_held(bound)
            .await
            .ok_or_else(|| DiffError::NoAnswer(node.to_owned(), bound))?;
        let status = registered.status(&snap);
        let (lens, subscribed) = registered.subscribed();
        let lens = lens.unwrap_or_default();
        let mut types = Vec::new();
        for (kind, wildcard, names) in subscribed {
            let Some(held) = held.iter().find(|h| h.kind == kind) else {
                continue;
            };
            let names: Vec<Arc<str>> = if wildcard {
                lens.wildcard_names_and(&snap, kind, names.iter())
            } else {
                names.iter().cloned().collect()
            };
            let newest: HashMap<Arc<str>, Arc<str>> = names
                .into_iter()
                .filter_map(|n| {
                    let r = lens.get(&snap, status.client, kind, &n)?;
                    Some((n, r.version.clone()))
                })
                .collect();
            types.push(compare(kind, held, &newest));
        }
        Ok(ProxyDiff {
            node_id: node.to_owned(),
            generation: snap.generation,
            types,
        })
    }
}

/// One type: `held` against `newest` (name -> version).
fn compare(kind: ResourceType, held: &HeldNow, newest: &HashMap<Arc<str>, Arc<str>>) -> TypeDiff {
    let in_flight: BTreeSet<&Arc<str>> = held.in_flight.iter().collect();
    let names: BTreeSet<&Arc<str>> = held.acked.keys().chain(newest.keys()).collect();
    let mut same = 0;
    let mut differences = Vec::new();
    let mut more = 0;
    for name in names {
        let (h, n) = (held.acked.get(name), newest.get(name));
        if h == n {
            same += 1;
            continue;
        }
        if differences.len() == MAX_DIFFERENCES {
            more += 1;
            continue;
        }
        differences.push(ResourceDiff {
            name: name.to_string(),
            held: h.map(|v| v.to_string()),
            newest: n.map(|v| v.to_string()),
            in_flight: in_flight.contains(name),
            rejected: n.is_some() && held.rejected.get(name) == n,
        });
    }
    TypeDiff {
        kind,
        same,
        differences,
        more,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> HashMap<Arc<str>, Arc<str>> {
        entries
            .iter()
            .map(|(n, v)| (Arc::from(*n), Arc::from(*v)))
            .collect()
    }

    #[test]
    fn every_kind_of_difference_is_named_and_the_rest_counted() {
        let held = HeldNow {
            kind: ResourceType::Cluster,
            acked: map(&[("same", "1"), ("old", "1"), ("gone", "1"), ("bad", "1")]),
            in_flight: vec![Arc::from("old")],
            rejected: map(&[("bad", "2")]),
        };
        let newest = map(&[("same", "1"), ("old", "2"), ("new", "1"), ("bad", "2")]);
        let diff = compare(ResourceType::Cluster, &held, &newest);
        assert_eq!(diff.same, 1);
        assert_eq!(diff.more, 0);
        let row = |name: &str| {
            diff.differences
                .iter()
                .find(|d| d.name == name)
                .unwrap_or_else(|| panic!("{name} in {diff:?}"))
        };
        assert_eq!(diff.differences.len(), 4, "{diff:?}");
        let old = row("old");
        assert_eq!(
            (old.held.as_deref(), old.newest.as_deref()),
            (Some("1"), Some("2"))
        );
        assert!(old.in_flight && !old.rejected);
        let gone = row("gone");
        assert_eq!(
            (gone.held.as_deref(), gone.newest.as_deref()),
            (Some("1"), None)
        );
        let new = row("new");
        assert_eq!(
            (new.held.as_deref(), new.newest.as_deref()),
            (None, Some("1"))
        );
        assert!(!new.in_flight);
        let bad = row("bad");
        assert!(bad.rejected && !bad.in_flight, "{bad:?}");
    }

    #[test]
    fn differences_past_the_bound_are_counted_not_listed() {
        let held = HeldNow {
            kind: ResourceType::Endpoint,
            acked: HashMap::new(),
            in_flight: Vec::new(),
            rejected: HashMap::new(),
        };
        let newest: HashMap<Arc<str>, Arc<str>> = (0..MAX_DIFFERENCES + 5)
            .map(|i| (Arc::from(format!("c{i}")), Arc::from("1")))
            .collect();
        let diff = compare(ResourceType::Endpoint, &held, &newest);
        assert_eq!(diff.differences.len(), MAX_DIFFERENCES);
        assert_eq!(diff.more, 5);
        assert_eq!(diff.same, 0);
    }
}
