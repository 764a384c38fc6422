//! A registry fed by code: tests, benchmarks and embedders push services
//! into it directly (Istio's `memory` registry plays the same role).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::Error;
use crate::model::{Hostname, Service};
use crate::registry::{Event, EventStream, Registry, RegistryId};

/// A registry whose contents are set by calls on it. Clones share state.
///
/// ```
/// use sextant_core::{MemoryRegistry, Protocol, Registry, Service};
/// let registry = MemoryRegistry::new("memory/demo");
/// registry.insert(Service::new("cart.shop.svc").with_port("http", 80, Protocol::Http));
/// let events = registry.watch(); // starts with a Reset holding cart.shop.svc
/// # drop(events);
/// ```
#[derive(Clone)]
pub struct MemoryRegistry {
    id: RegistryId,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    services: BTreeMap<Hostname, Service>,
    synced: bool,
    watchers: Vec<mpsc::UnboundedSender<Result<Event, Error>>>,
}

impl MemoryRegistry {
    /// An empty registry that counts as synced at once.
    pub fn new(id: impl Into<RegistryId>) -> Self {
        Self::with_synced(id.into(), true)
    }

    /// An empty registry that is not synced until [`MemoryRegistry::reset`]
    /// is called: for testing readiness.
    pub fn new_unsynced(id: impl Into<RegistryId>) -> Self {
        Self::with_synced(id.into(), false)
    }

    fn with_synced(id: RegistryId, synced: bool) -> Self {
        MemoryRegistry {
            id,
            inner: Arc::new(Mutex::new(Inner {
                services: BTreeMap::new(),
                synced,
                watchers: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a service.
    pub fn insert(&self, service: Service) {
        let mut inner = self.lock();
        inner
            .services
            .insert(service.hostname.clone(), service.clone());
        if inner.synced {
            inner.send(|| Ok(Event::Apply(service.clone())));
        }
    }

    /// Removes a service.
    pub fn remove(&self, hostname: &str) {
        let mut inner = self.lock();
        inner.services.remove(hostname);
        if inner.synced {
            let h = Hostname::new(hostname);
            inner.send(|| Ok(Event::Delete(h.clone())));
        }
    }

    /// Replaces everything, and marks the registry synced.
    pub fn reset(&self, services: Vec<Service>) {
        let mut inner = self.lock();
        inner.services = services
            .into_iter()
            .map(|s| (s.hostname.clone(), s))
            .collect();
        inner.synced = true;
        let all: Vec<Service> = inner.services.values().cloned().collect();
        inner.send(|| Ok(Event::Reset(all.clone())));
    }

    /// Sends an error to every watcher, as an adapter would when its source
    /// fails ([`Error::Unavailable`]) or an object is malformed.
    pub fn fail(&self, error: impl Fn() -> Error) {
        self.lock().send(|| Err(error()));
    }

    /// The current services.
    pub fn services(&self) -> Vec<Service> {
        self.lock().services.values().cloned().collect()
    }
}

impl Inner {
    fn send(&mut self, event: impl Fn() -> Result<Event, Error>) {
        self.watchers.retain(|w| w.send(event()).is_ok());
    }
}

impl Registry for MemoryRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        if inner.synced {
            let all = inner.services.values().cloned().collect();
            // The receiver is alive: it is in this scope.
            let _ = tx.send(Ok(Event::Reset(all)));
        }
        inner.watchers.push(tx);
        UnboundedReceiverStream::new(rx).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn svc(h: &str) -> Service {
        Service::new(h).with_port("http", 80, Protocol::Http)
    }

    #[tokio::test]
    async fn watch_starts_with_reset_then_follows_changes() {
        let r = MemoryRegistry::new("memory/t");
        r.insert(svc("a.svc"));
        let mut w = r.watch();
        r.insert(svc("b.svc"));
        r.remove("a.svc");
        let got: Vec<Event> = (&mut w).take(3).map(|e| e.expect("ok")).collect().await;
        assert_eq!(
            got,
            vec![
                Event::Reset(vec![svc("a.svc")]),
                Event::Apply(svc("b.svc")),
                Event::Delete("a.svc".into()),
            ]
        );
        // A second watch starts from the current state.
        let mut w2 = r.watch();
        assert_eq!(
            w2.next().await.map(|e| e.expect("ok")),
            Some(Event::Reset(vec![svc("b.svc")]))
        );
    }

    #[tokio::test]
    async fn unsynced_registry_sends_nothing_until_reset() {
        let r = MemoryRegistry::new_unsynced("memory/t");
        let mut w = r.watch();
        r.insert(svc("a.svc"));
        assert!(futures::FutureExt::now_or_never(w.next()).is_none());
        r.reset(vec![svc("b.svc")]);
        assert_eq!(
            w.next().await.map(|e| e.expect("ok")),
            Some(Event::Reset(vec![svc("b.svc")]))
        );
    }

    #[tokio::test]
    async fn errors_reach_watchers() {
        let r = MemoryRegistry::new("memory/t");
        let mut w = r.watch();
        let _ = w.next().await;
        r.fail(|| Error::unavailable("down"));
        let e = w.next().await.expect("item").expect_err("error");
        assert!(e.makes_stale());
    }
}
