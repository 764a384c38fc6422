//! What a client holds of one type: shared frozen bases plus each
//! connection's own differences.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::resource::{Resource, ResourceType};

/// A resource the client holds: the shared resource we sent (one pointer
/// per entry, keyed by its own name, so a connection's bookkeeping costs a
/// few bytes per resource), or a bodiless stand-in for a version a delta
/// client declared on reconnect.
#[derive(Clone)]
pub(super) struct Held(Arc<Resource>);

impl Held {
    pub(super) fn sent(resource: Arc<Resource>) -> Held {
        Held(resource)
    }

    pub(super) fn declared(kind: ResourceType, name: Arc<str>, version: Arc<str>) -> Held {
        Held(Arc::new(Resource {
            kind,
            name,
            version,
            any: bytes::Bytes::new(),
            placeholder: false,
            owner: None,
        }))
    }

    pub(super) fn name(&self) -> &Arc<str> {
        &self.0.name
    }

    pub(super) fn version(&self) -> &Arc<str> {
        &self.0.version
    }

    /// The resource, unless this only stands for a declared version (an
    /// encoded resource is never empty: it carries its type URL).
    pub(super) fn resource(&self) -> Option<&Arc<Resource>> {
        (!self.0.any.is_empty()).then_some(&self.0)
    }
}

impl std::borrow::Borrow<str> for Held {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Held {}

impl std::hash::Hash for Held {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must agree with `str`'s hash, for lookups by name.
        (*self.0.name).hash(state);
    }
}

/// A frozen set of held resources, shared by every connection that holds
/// exactly these (on a mesh where proxies subscribe alike, one per type).
#[derive(Default)]
pub(crate) struct Base {
    set: HashSet<Held>,
    /// XOR of `Resource::digest` over the set.
    digest: u64,
}

impl Base {
    /// `from` less `removed`, with `added`, whose digest is `digest`; `None`
    /// when that is empty.
    pub(super) fn changed<'a>(
        from: Option<&Base>,
        removed: impl Iterator<Item = &'a Arc<str>>,
        added: impl Iterator<Item = Held>,
        digest: u64,
    ) -> Option<Arc<Base>> {
        let mut set = from.map(|b| b.set.clone()).unwrap_or_default();
        for name in removed {
            set.remove(&**name);
        }
        for h in added {
            set.replace(h);
        }
        (!set.is_empty()).then(|| Arc::new(Base { set, digest }))
    }

    /// How many resources it holds.
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }
}

/// What a client holds of one type: a shared [`Base`] plus this
/// connection's own differences from it. Connections that receive the same
/// responses end up on the same base and cost a pointer each; one that
/// diverges (a NACK, an unusual subscription) records only its differences
/// until they grow large enough to be folded into a base of its own.
#[derive(Default)]
pub(super) struct HeldSet {
    base: Option<Arc<Base>>,
    /// Name -> what is held instead of the base's entry (`None`: nothing).
    over: HashMap<Arc<str>, Option<Held>>,
    len: usize,
    /// XOR of `Resource::digest` over every entry: the SotW version.
    digest: u64,
}

impl HeldSet {
    pub(super) fn of(base: Option<Arc<Base>>) -> HeldSet {
        HeldSet {
            len: base.as_ref().map_or(0, |b| b.set.len()),
            digest: base.as_ref().map_or(0, |b| b.digest),
            base,
            over: HashMap::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// XOR of `Resource::digest` over every entry.
    pub(super) fn digest(&self) -> u64 {
        self.digest
    }

    /// The shared base it starts from, if any (tests).
    #[cfg(test)]
    pub(super) fn base(&self) -> Option<&Arc<Base>> {
        self.base.as_ref()
    }

    /// Whether it differs from its base (tests).
    #[cfg(test)]
    pub(super) fn diverges(&self) -> bool {
        !self.over.is_empty()
    }

    /// How many names differ from its base (tests).
    #[cfg(test)]
    pub(super) fn differences(&self) -> usize {
        self.over.len()
    }

    /// Sets the digest whatever the entries (tests: a crafted collision).
    #[cfg(test)]
    pub(super) fn force_digest(&mut self, digest: u64) {
        self.digest = digest;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn get(&self, name: &str) -> Option<&Held> {
        match self.over.get(name) {
            Some(o) => o.as_ref(),
            None => self.base.as_ref()?.set.get(name),
        }
    }

    /// Every entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Held> {
        let base = self.base.iter().flat_map(|b| b.set.iter());
        base.filter(|h| !self.over.contains_key(&**h.name()))
            .chain(self.over.values().flatten())
    }

    /// The base a plan may start from: this set exactly, if it is one
    /// (`Some(None)` when empty), else `None`.
    pub(super) fn as_base(&self) -> Option<Option<Arc<Base>>> {
        if self.is_empty() {
            Some(None)
        } else if self.over.is_empty() {
            Some(self.base.clone())
        } else {
            None
        }
    }

    /// True when this holds the same versions as `base`.
    pub(super) fn same_as(&self, base: Option<&Arc<Base>>) -> bool {
        let Some(base) = base else {
            return self.is_empty();
        };
        if self.over.is_empty() && self.base.as_ref().is_some_and(|b| Arc::ptr_eq(b, base)) {
            return true;
        }
        self.len == base.set.len()
            && self.digest == base.digest
            && base.set.iter().all(|b| {
                self.get(b.name())
                    .is_some_and(|h| h.version() == b.version())
            })
    }

    pub(super) fn set(&mut self, name: Arc<str>, held: Option<Held>) -> Option<Held> {
        let old = self.get(&name).cloned();
        if let Some(o) = &old {
            self.digest ^= Resource::digest(&name, o.version());
            self.len -= 1;
        }
        if let Some(h) = &held {
            debug_assert_eq!(h.name(), &name);
            self.digest ^= Resource::digest(&name, h.version());
            self.len += 1;
        }
        let in_base = self.base.as_ref().and_then(|b| b.set.get(&*name));
        let as_in_base = match (&held, in_base) {
            (Some(h), Some(b)) => Arc::ptr_eq(&h.0, &b.0),
            (None, None) => true,
            _ => false,
        };
        if as_in_base {
            self.over.remove(&*name);
        } else {
            self.over.insert(name, held);
        }
        if self.over.len() > 64 && self.over.len() * 4 > self.len {
            self.fold();
        }
        old
    }

    /// Folds the differences into a base of this connection's own.
    pub(super) fn fold(&mut self) {
        let set = self.iter().cloned().collect();
        self.base = Some(Arc::new(Base {
            set,
            digest: self.digest,
        }));
        self.over.clear();
    }
}
