//! A registry behind the resolver: its services' names leave as addresses.

use std::collections::HashMap;

use futures::StreamExt;
use sextant_core::{Address, Event, EventStream, Hostname, Registry, RegistryId, Service};
use tokio::sync::mpsc;

use crate::Resolver;

/// A registry whose services' DNS names are resolved by Sextant (see the
/// crate's text). Made by [`Resolver::wrap`].
pub struct Resolving<R> {
    inner: R,
    resolver: Resolver,
}

impl<R: Registry> Resolving<R> {
    pub(crate) fn new(inner: R, resolver: Resolver) -> Self {
        Resolving { inner, resolver }
    }
}

impl<R: Registry> Registry for Resolving<R> {
    fn id(&self) -> &RegistryId {
        self.inner.id()
    }

    fn watch(&self) -> EventStream {
        let inner = self.inner.watch();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(run(inner, self.resolver.clone(), tx));
        tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
    }
}

type Sink = mpsc::Sender<Result<Event, sextant_core::Error>>;

/// Passes `inner`'s events on with names resolved, and an `Apply` for each
/// service whose addresses change, until the receiver is gone.
async fn run(mut inner: EventStream, resolver: Resolver, tx: Sink) {
    let mut state = Follower {
        resolver: resolver.clone(),
        raw: HashMap::new(),
        sent: HashMap::new(),
    };
    let mut changes = resolver.changes();
    loop {
        tokio::select! {
            () = tx.closed() => break,
            item = inner.next() => {
                let out = match item {
                    None => break,
                    Some(Err(e)) => Err(e),
                    Some(Ok(event)) => Ok(state.event(event).await),
                };
                if tx.send(out).await.is_err() {
                    break;
                }
            }
            moved = changes.changed() => {
                if moved.is_err() {
                    break;
                }
                for service in state.moved() {
                    if tx.send(Ok(Event::Apply(service))).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    state.forget();
}

/// What one wrapped stream reported, for the services with names.
struct Follower {
    resolver: Resolver,
    /// As the registry reported them.
    raw: HashMap<Hostname, Service>,
    /// As they were last passed on.
    sent: HashMap<Hostname, Service>,
}

/// The names Sextant resolves for `service`.
fn names(service: &Service) -> Vec<Hostname> {
    if service.resolved_by_proxy() {
        return Vec::new();
    }
    let mut out: Vec<Hostname> = service
        .endpoints
        .iter()
        .filter_map(|e| match &e.address {
            Address::Dns(name) => Some(name.clone()),
            Address::Ip(_) => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Follower {
    async fn event(&mut self, event: Event) -> Event {
        match event {
            Event::Reset(services) => {
                let before: Vec<Hostname> = self.raw.keys().cloned().collect();
                let mut fresh = Vec::new();
                for s in &services {
                    fresh.extend(self.take(s));
                }
                for h in before {
                    if !services.iter().any(|s| s.hostname == h) {
                        self.remove(&h);
                    }
                }
                self.resolver.settled(&fresh).await;
                Event::Reset(services.into_iter().map(|s| self.expand(s)).collect())
            }
            Event::Apply(service) => {
                let fresh = self.take(&service);
                self.resolver.settled(&fresh).await;
                Event::Apply(self.expand(service))
            }
            Event::Delete(hostname) => {
                self.remove(&hostname);
                Event::Delete(hostname)
            }
            other => other,
        }
    }

    /// Records `service` (replacing what its hostname had); returns the
    /// names it newly wants.
    fn take(&mut self, service: &Service) -> Vec<Hostname> {
        let old = self
            .raw
            .get(&service.hostname)
            .map(names)
            .unwrap_or_default();
        let new = names(service);
        let fresh: Vec<Hostname> = new.iter().filter(|n| !old.contains(n)).cloned().collect();
        for n in &fresh {
            self.resolver.want(n);
        }
        for n in old.iter().filter(|n| !new.contains(n)) {
            self.resolver.release(n);
        }
        if new.is_empty() {
            self.raw.remove(&service.hostname);
            self.sent.remove(&service.hostname);
        } else {
            self.raw.insert(service.hostname.clone(), service.clone());
        }
        fresh
    }

    fn remove(&mut self, hostname: &Hostname) {
        if let Some(old) = self.raw.remove(hostname) {
            for n in names(&old) {
                self.resolver.release(&n);
            }
        }
        self.sent.remove(hostname);
    }

    /// `service` with each name's endpoint replaced by one per address of
    /// its last good answer (none before one).
    fn expand(&mut self, service: Service) -> Service {
        if !self.raw.contains_key(&service.hostname) {
            return service;
        }
        let mut out = Service {
            endpoints: Vec::with_capacity(service.endpoints.len()),
            ..service.clone()
        };
        for e in &service.endpoints {
            match &e.address {
                Address::Ip(_) => out.endpoints.push(e.clone()),
                Address::Dns(name) => {
                    for ip in self.resolver.answer(name).iter().flat_map(|a| a.iter()) {
                        let mut one = e.clone();
                        one.address = Address::Ip(*ip);
                        if !out.endpoints.contains(&one) {
                            out.endpoints.push(one);
                        }
                    }
                }
            }
        }
        self.sent.insert(out.hostname.clone(), out.clone());
        out
    }

    /// The services whose addresses moved since they were last passed on.
    fn moved(&mut self) -> Vec<Service> {
        let raw: Vec<Service> = self.raw.values().cloned().collect();
        let mut out = Vec::new();
        for s in raw {
            let before = self.sent.get(&s.hostname).cloned();
            let now = self.expand(s);
            if before.as_ref() != Some(&now) {
                out.push(now);
            }
        }
        out
    }

    /// The stream is gone: its names are no longer wanted.
    fn forget(&mut self) {
        let hosts: Vec<Hostname> = self.raw.keys().cloned().collect();
        for h in hosts {
            self.remove(&h);
        }
    }
}
