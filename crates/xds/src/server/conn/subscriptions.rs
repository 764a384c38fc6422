//! The state-of-the-world subscriptions connections send, shared by the
//! connections that send the same list and released with the last one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::resource::ResourceType;
use crate::server::request::Names;

/// A subscription's names, shared by the connections that subscribe alike.
pub(crate) type NameSet = BTreeSet<Arc<str>>;

/// The hash of one name; XORed over a set, a digest of the set.
pub(super) fn name_hash(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// Names one connection may subscribe to per type. Far above any real
/// mesh; it bounds what a misbehaving client can make the server hold.
pub(crate) const MAX_NAMES_PER_TYPE: usize = 200_000;

/// One state-of-the-world subscription as sent: its names' encoded
/// entries (to confirm a match), the set and digest, and whether it named
/// `*`.
pub(super) struct Interned {
    pub(super) entries: Vec<u8>,
    pub(super) names: Arc<NameSet>,
    pub(super) digest: u64,
    pub(super) star: bool,
    /// Its key in [`Subscriptions`].
    pub(super) request_digest: u64,
}

/// The SotW subscriptions connections have sent, by type and request
/// digest: connections that send the same list (a thousand Envoys restating
/// the same clusters) share one set, found with one comparison of the
/// encoded names, instead of each building its own and comparing it name by
/// name with the shared plan's. Each entry lives as long as a connection
/// uses it: the last one to let go removes it ([`Subscriptions::release`]),
/// so what a client sent leaves with its stream.
#[derive(Default)]
pub(crate) struct Subscriptions(std::sync::Mutex<SubscriptionMap>);

#[derive(Default)]
pub(super) struct SubscriptionMap {
    pub(super) map: HashMap<(ResourceType, u64), Arc<Interned>>,
    /// Names held by the entries, for the metrics.
    pub(super) names: usize,
}

impl Subscriptions {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SubscriptionMap> {
        crate::server::lock(&self.0)
    }

    /// The shared subscription equal to `names`, if one is known.
    pub(super) fn get(&self, kind: ResourceType, names: &Names) -> Option<Arc<Interned>> {
        let table = self.lock();
        let found = table.map.get(&(kind, names.digest()))?;
        names.entries_equal(&found.entries).then(|| found.clone())
    }

    /// Shares `interned` (or the equal one already shared) under its
    /// request digest. Every subscription returned must be given back to
    /// [`Subscriptions::release`] when the connection is done with it.
    pub(super) fn offer(&self, kind: ResourceType, interned: Interned) -> Arc<Interned> {
        let mut table = self.lock();
        let key = (kind, interned.request_digest);
        match table.map.get(&key) {
            Some(known) if known.entries == interned.entries => known.clone(),
            // Another list with the same digest: used, not shared.
            Some(_) => Arc::new(interned),
            None => {
                table.names += interned.names.len();
                let shared = Arc::new(interned);
                table.map.insert(key, shared.clone());
                shared
            }
        }
    }

    /// A connection is done with `interned`: the last user removes it.
    pub(super) fn release(&self, kind: ResourceType, interned: Arc<Interned>) {
        let mut table = self.lock();
        let key = (kind, interned.request_digest);
        // The table's reference and this one: no connection uses it any
        // more. Counted and dropped under the lock, so that of two
        // connections releasing at once exactly one sees the last use.
        if Arc::strong_count(&interned) == 2
            && table
                .map
                .get(&key)
                .is_some_and(|known| Arc::ptr_eq(known, &interned))
        {
            table.map.remove(&key);
            table.names -= interned.names.len();
        }
        drop(interned);
        drop(table);
    }

    /// Subscriptions known, and the names they hold.
    pub(crate) fn size(&self) -> (usize, usize) {
        let table = self.lock();
        (table.map.len(), table.names)
    }
}
