//! What a registry has sent, by its own object key: for adapters whose
//! source changes objects (a Kubernetes Service, one of its slices, a
//! node), not whole services. After a change the adapter rebuilds the
//! services its keys touch and asks [`SentServices::update`] for the event:
//! `Apply` with the service as it is now, or `Delete` of the hostname it
//! last sent when there is none any more (the hostname is remembered, so the
//! adapter need not recompute it from an object that is gone).

use std::collections::HashMap;
use std::hash::Hash;

use crate::model::{Hostname, Service};
use crate::registry::Event;

/// The hostname last sent for each key; see the module docs.
#[derive(Debug, Default)]
pub struct SentServices<K> {
    sent: HashMap<K, Hostname>,
}

impl<K: Hash + Eq> SentServices<K> {
    /// An empty record.
    pub fn new() -> Self {
        SentServices {
            sent: HashMap::new(),
        }
    }

    /// The registry's whole state as one `Reset`, remembered: each key's
    /// service, `None` for a key that makes none. Sorted by hostname.
    pub fn reset(&mut self, all: impl IntoIterator<Item = (K, Option<Service>)>) -> Event {
        self.sent.clear();
        let mut services = Vec::new();
        for (key, service) in all {
            if let Some(s) = service {
                self.sent.insert(key, s.hostname.clone());
                services.push(s);
            }
        }
        services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Event::Reset(services)
    }

    /// The event for `key` now that its service is `service`: `Apply`, or
    /// `Delete` if it had sent one and has none now, else nothing.
    pub fn update(&mut self, key: K, service: Option<Service>) -> Option<Event> {
        match service {
            Some(s) => {
                self.sent.insert(key, s.hostname.clone());
                Some(Event::Apply(s))
            }
            None => self.sent.remove(&key).map(Event::Delete),
        }
    }

    /// Services sent and not deleted since.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_remember_their_hostname_and_deletes_name_it() {
        let mut sent = SentServices::new();
        let reset = sent.reset([(1, Some(Service::new("a.svc"))), (2, None)]);
        assert!(matches!(&reset, Event::Reset(s) if s.len() == 1));
        // A key that made no service, and still makes none: nothing to say.
        assert_eq!(sent.update(2, None), None);
        assert!(matches!(
            sent.update(2, Some(Service::new("b.svc"))),
            Some(Event::Apply(_))
        ));
        // Gone: deleted under the hostname it was sent as.
        assert_eq!(sent.update(1, None), Some(Event::Delete("a.svc".into())));
        assert_eq!(sent.update(1, None), None, "once");
        assert_eq!(sent.len(), 1);
    }
}
