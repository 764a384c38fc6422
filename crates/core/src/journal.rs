//! What happened, in order: a bounded journal of the control plane's
//! events (a registry synced, went stale, recovered or was dropped; a
//! conflict appeared; a snapshot was pushed; a proxy rejected
//! configuration), for `/debug/events`.
//!
//! Each kind of source keeps its own ring ([`Source`]), so a flood of one
//! kind (a client that NACKs on every push, a flapping registry) pushes out
//! only older events of that kind, never the others. Entries are numbered
//! in one sequence across rings: a reader asks for what came after the
//! last number it saw.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A registry's first full read.
    RegistrySynced,
    /// A registry answered again after being stale or dropped.
    RegistryRecovered,
    /// A registry could not be read; its last good state keeps serving.
    RegistryStale,
    /// A registry stale for longer than allowed: its contribution is gone.
    RegistryDropped,
    /// Two registries (or rules) disagree about one object.
    Conflict,
    /// A new snapshot reached the server's connections.
    Push,
    /// A proxy rejected configuration.
    Nack,
    /// A workload registered from a WorkloadGroup, went away, or was
    /// refused.
    Workload,
}

impl Kind {
    fn source(self) -> Source {
        match self {
            Kind::RegistrySynced
            | Kind::RegistryRecovered
            | Kind::RegistryStale
            | Kind::RegistryDropped => Source::Registries,
            Kind::Conflict => Source::Conflicts,
            Kind::Push => Source::Pushes,
            Kind::Nack | Kind::Workload => Source::Proxies,
        }
    }
}

/// Where events come from: each has its own ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Registries,
    Conflicts,
    Pushes,
    Proxies,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Its number: grows by one per event, across kinds.
    pub seq: u64,
    /// When it was recorded.
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub at: SystemTime,
    /// What it is about.
    pub kind: Kind,
    /// The registry, host, snapshot or proxy it concerns.
    pub subject: String,
    /// What happened, readable.
    pub message: String,
}

/// Events kept per source unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 500;
/// The longest subject or message kept (longer ones are cut).
pub const MAX_TEXT: usize = 1024;

/// The journal. Cheap to record into from any thread.
#[derive(Debug)]
pub struct Journal {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    rings: [VecDeque<Entry>; 4],
}

impl Default for Journal {
    fn default() -> Self {
        Journal::new(DEFAULT_CAPACITY)
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl Journal {
    /// A journal keeping the last `capacity` events of each source.
    pub fn new(capacity: usize) -> Journal {
        Journal {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// Records an event.
    pub fn record(&self, kind: Kind, subject: impl Into<String>, message: impl Into<String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.next += 1;
        let entry = Entry {
            seq: inner.next,
            at: SystemTime::now(),
            kind,
            subject: cut(subject.into()),
            message: cut(message.into()),
        };
        let ring = &mut inner.rings[kind.source() as usize];
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The events numbered after `since` (all kept, with 0), oldest first,
    /// at most `limit` of them (the newest).
    pub fn since(&self, since: u64, limit: usize) -> Vec<Entry> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Entry> = inner
            .rings
            .iter()
            .flat_map(|r| r.iter().filter(|e| e.seq > since).cloned())
            .collect();
        out.sort_unstable_by_key(|e| e.seq);
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        out
    }

    /// The number of the newest event (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_back_in_order_and_a_flood_of_one_kind_keeps_the_others() {
        let j = Journal::new(3);
        j.record(Kind::RegistrySynced, "file/main", "first full read");
        for i in 0..10 {
            j.record(Kind::Nack, "node-1", format!("rejected {i}"));
        }
        j.record(Kind::Push, "snapshot 2", "configuration");
        let all = j.since(0, 100);
        let kinds: Vec<Kind> = all.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::RegistrySynced,
                Kind::Nack,
                Kind::Nack,
                Kind::Nack,
                Kind::Push
            ]
        );
        assert_eq!(all[1].message, "rejected 7", "the oldest NACKs went");
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(j.last_seq(), 12);
        // After a number: only what came later; a limit keeps the newest.
        assert_eq!(j.since(10, 100).len(), 2);
        assert_eq!(j.since(0, 2)[1].kind, Kind::Push);
        // Text is bounded.
        j.record(Kind::Conflict, "h", "é".repeat(2000));
        let long = &j.since(12, 1)[0].message;
        assert!(long.len() <= MAX_TEXT + '…'.len_utf8(), "{}", long.len());
    }
}
