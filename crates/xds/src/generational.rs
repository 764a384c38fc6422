//! A cache of values computed for one generation (a snapshot's, or its
//! topology's), shared by the connections that serve it.
//!
//! It only moves forward: the first lookup for a newer generation drops
//! what the older one kept, and a connection still on an older generation
//! computes its value without keeping it, so it cannot evict the newer
//! values others share. Values are computed outside the lock (two
//! connections may compute one value at once; one of them is kept), and at
//! most `max` are kept per generation: past it, values are computed and
//! handed out, not kept.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

pub(crate) struct Generational<K, V> {
    kept: Mutex<(u64, HashMap<K, V>)>,
    max: usize,
}

impl<K: Hash + Eq, V: Clone> Generational<K, V> {
    /// An empty cache keeping at most `max` values per generation.
    pub(crate) fn new(max: usize) -> Self {
        Generational {
            kept: Mutex::new((0, HashMap::new())),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, (u64, HashMap<K, V>)> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key` for `generation`, made by `make` on a miss.
    pub(crate) fn get_or(&self, generation: u64, key: K, make: impl FnOnce() -> V) -> V {
        {
            let mut kept = self.lock();
            if kept.0 < generation {
                *kept = (generation, HashMap::new());
            }
            if kept.0 == generation
                && let Some(v) = kept.1.get(&key)
            {
                return v.clone();
            }
        }
        let made = make();
        let mut kept = self.lock();
        if kept.0 < generation {
            *kept = (generation, HashMap::new());
        }
        if kept.0 == generation && kept.1.len() < self.max {
            // Another connection may have made it meanwhile: keep one.
            return kept.1.entry(key).or_insert(made).clone();
        }
        made
    }

    /// Values kept now.
    pub(crate) fn len(&self) -> usize {
        self.lock().1.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shared_per_generation_and_older_ones_never_evict() {
        let c: Generational<&str, u32> = Generational::new(2);
        let mut made = 0;
        let mut get = |g, k| {
            c.get_or(g, k, || {
                made += 1;
                made
            })
        };
        assert_eq!(get(1, "a"), 1);
        assert_eq!(get(1, "a"), 1, "kept");
        assert_eq!(get(2, "a"), 2, "a newer generation makes it again");
        assert_eq!(get(1, "a"), 3, "an older one is made, not kept");
        assert_eq!(get(2, "a"), 2, "and did not evict the newer");
        assert_eq!(get(2, "b"), 4);
        assert_eq!(get(2, "c"), 5, "over the bound: made");
        assert_eq!(get(2, "c"), 6, "and not kept");
        assert_eq!(c.len(), 2);
    }
}
