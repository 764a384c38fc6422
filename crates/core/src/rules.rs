//! Traffic rules as a second stream beside services: where they come from
//! ([`RuleSource`]) and what the aggregator attaches to the services they
//! bind to ([`Rule`]).
//!
//! A source reports rules with the same vocabulary as services,
//! [`Event<Rule>`](crate::Event): a whole state (`Reset`), one rule added or
//! replaced (`Apply`), one removed (`Delete` by [`RuleKey`]). Readiness,
//! staleness and problems work as for registries. One adapter may implement
//! both [`crate::Registry`] and [`RuleSource`] (Kubernetes: Services and
//! VirtualServices; Consul: the catalog and config entries), or either.
//!
//! The rule model itself (routes, destination policies) comes with the
//! traffic-rules work; until then [`RuleSpec`] has one kind, a note, which
//! proves the plumbing: a rule change reaches exactly the services it binds
//! to.

use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::Error;
use crate::model::Hostname;
use crate::registry::{Event, Keyed, RegistryId};

/// A rule's identity within its source: namespace and name, as the
/// platform's object (a VirtualService, a config entry) is named.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct RuleKey {
    /// The namespace (empty where the platform has none).
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl RuleKey {
    /// `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        RuleKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// A traffic rule and the services it binds to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// Its identity within its source.
    pub key: RuleKey,
    /// The hostnames it binds to: a change to the rule re-translates these
    /// services and no others.
    pub hosts: Vec<Hostname>,
    /// What it says.
    pub spec: RuleSpec,
}

/// What a rule says. The traffic-rules work adds the real kinds (route
/// rules, destination policies); match with a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RuleSpec {
    /// Text and nothing else: a rule kind for tests of the plumbing.
    Note(String),
}

impl Keyed for Rule {
    type Key = RuleKey;
    fn key(&self) -> RuleKey {
        self.key.clone()
    }
}

/// The stream a rule source returns from [`RuleSource::watch_rules`]:
/// endless, errors on it as for [`crate::EventStream`].
pub type RuleStream = BoxStream<'static, Result<Event<Rule>, Error>>;

/// A source of traffic rules, the second stream beside services (Istio
/// keeps its ConfigStore apart from service discovery in the same way).
pub trait RuleSource: Send + Sync + 'static {
    /// This source's id, such as `k8s/cluster-a`; it may equal a
    /// registry's id when one adapter is both.
    fn id(&self) -> &RegistryId;

    /// Starts watching: a `Reset` after the first full read, then changes.
    fn watch_rules(&self) -> RuleStream;
}

/// Rules fed by code, for tests and embedders (the counterpart of
/// [`crate::MemoryRegistry`]). Clones share state.
#[derive(Clone)]
pub struct MemoryRules {
    id: RegistryId,
    inner: Arc<Mutex<MemoryRulesInner>>,
}

struct MemoryRulesInner {
    rules: Vec<Rule>,
    watchers: Vec<mpsc::UnboundedSender<Result<Event<Rule>, Error>>>,
}

impl MemoryRules {
    /// An empty source that counts as synced at once.
    pub fn new(id: impl Into<RegistryId>) -> Self {
        MemoryRules {
            id: id.into(),
            inner: Arc::new(Mutex::new(MemoryRulesInner {
                rules: Vec::new(),
                watchers: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemoryRulesInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(inner: &mut MemoryRulesInner, event: &Event<Rule>) {
        inner.watchers.retain(|w| w.send(Ok(event.clone())).is_ok());
    }

    /// Adds or replaces a rule.
    pub fn insert(&self, rule: Rule) {
        let mut inner = self.lock();
        inner.rules.retain(|r| r.key != rule.key);
        inner.rules.push(rule.clone());
        Self::send(&mut inner, &Event::Apply(rule));
    }

    /// Removes a rule.
    pub fn remove(&self, key: &RuleKey) {
        let mut inner = self.lock();
        inner.rules.retain(|r| &r.key != key);
        Self::send(&mut inner, &Event::Delete(key.clone()));
    }
}

impl RuleSource for MemoryRules {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch_rules(&self) -> RuleStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let _ = tx.send(Ok(Event::Reset(inner.rules.clone())));
        inner.watchers.push(tx);
        UnboundedReceiverStream::new(rx).boxed()
    }
}
