//! What "a registry works" and "a rule source works" mean, as tests every
//! adapter runs against its own source: [`registry_contract`],
//! [`rule_source_contract`], and, for sources that can hold an object that
//! cannot be read, [`problems_contract`]. Like tower's `tower-test`, they
//! state the contract once instead of each adapter's tests restating it.
//!
//! The contract of both streams (see `sextant_core::Registry` and
//! `sextant_core::RuleSource`):
//! 1. the stream's first item is a `Reset`: the registry's whole state, even
//!    if empty, before any `Apply` or `Delete`;
//! 2. errors travel on the stream and never end it;
//! 3. when the source goes away the registry says so with an error that
//!    makes its contribution stale (`Error::Unavailable`), and when the
//!    source is back it sends a `Reset` again, so that the aggregator can
//!    swap in the fresh state and clear the staleness;
//! 4. the stream never ends.
//!
//! A `Delete` of a key the source never reported is allowed (an adapter
//! may not know what it sent); the aggregator ignores it, which
//! `sextant-aggregate`'s tests check, so it is not part of this test.
//!
//! Problems ([`problems_contract`]): an object that cannot be read is
//! reported as `Error::InvalidObject` naming it, the stream goes on, and
//! once the object is fixed its problem is retracted by an
//! `Event::Resolved` with the same name, without a `Reset` of the whole
//! source in between.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use sextant_core::{Error, Event, Keyed, Registry, RuleSource};

use crate::events::next;

/// How a test takes a registry's source away and brings it back.
pub trait Outage {
    /// The source stops answering (or answers garbage).
    fn begin(&mut self) -> impl Future<Output = ()>;
    /// The source is back.
    fn end(&mut self) -> impl Future<Output = ()>;
}

/// For registries whose source cannot go away (a file read locally).
pub struct NoOutage;

impl Outage for NoOutage {
    async fn begin(&mut self) {}
    async fn end(&mut self) {}
}

impl Outage for crate::peers::Etcd {
    async fn begin(&mut self) {
        self.stop().await;
    }
    async fn end(&mut self) {
        self.restart().await;
    }
}

impl Outage for crate::k8s::KubeDouble {
    async fn begin(&mut self) {
        self.stop().await;
    }
    async fn end(&mut self) {
        self.restart().await;
    }
}

impl Outage for crate::consul::ConsulDouble {
    async fn begin(&mut self) {
        self.fail_with(Some((500, "rpc error: No cluster leader")));
    }
    async fn end(&mut self) {
        self.fail_with(None);
    }
}

/// How a test makes one object of a source unreadable, and fixes it.
pub trait Problem {
    /// One object becomes unreadable (malformed, of the wrong shape).
    fn spoil(&mut self) -> impl Future<Output = ()>;
    /// The same object is written well again (or deleted).
    fn mend(&mut self) -> impl Future<Output = ()>;
}

/// Checks the contract above against `registry`, whose source must be up
/// (and synced) when called. With an `outage` (not [`NoOutage`]), also
/// takes the source away and brings it back. Panics, naming the clause,
/// when the registry breaks it; every wait is bounded.
pub async fn registry_contract<O: Outage>(registry: &dyn Registry, outage: Option<&mut O>) {
    stream_contract(registry.id().as_str(), registry.watch(), outage).await;
}

/// [`registry_contract`] for a rule source's stream.
pub async fn rule_source_contract<O: Outage>(source: &dyn RuleSource, outage: Option<&mut O>) {
    stream_contract(source.id().as_str(), source.watch_rules(), outage).await;
}

/// Checks that a problem belongs to its object, on `events` (a new stream
/// of a source that is up): after the first `Reset`, `problem.spoil()`
/// brings an `Error::InvalidObject` and the stream goes on;
/// `problem.mend()` brings an `Event::Resolved` naming the same object, and
/// no `Reset` comes in between.
pub async fn problems_contract<T: Keyed + std::fmt::Debug, P: Problem>(
    id: &str,
    mut events: BoxStream<'static, Result<Event<T>, Error>>,
    problem: &mut P,
) {
    loop {
        if let Ok(Event::Reset(_)) = next(&mut events).await {
            break;
        }
    }
    problem.spoil().await;
    let object = loop {
        match next(&mut events).await {
            Err(Error::InvalidObject { object, .. }) => break object,
            Err(e) if e.makes_stale() => {
                panic!("{id}: one unreadable object made the source stale: {e}")
            }
            _ => {}
        }
    };
    problem.mend().await;
    loop {
        match next(&mut events).await {
            Ok(Event::Resolved(o)) if o == object => break,
            Ok(Event::Reset(_)) => panic!(
                "{id}: fixing {object} sent the whole source again (a Reset) instead of retracting its problem"
            ),
            _ => {}
        }
    }
}

/// The contract on one stream (see the module docs).
async fn stream_contract<T: Keyed + std::fmt::Debug, O: Outage>(
    id: &str,
    mut events: BoxStream<'static, Result<Event<T>, Error>>,
    outage: Option<&mut O>,
) {
    // 1. The first item is a Reset.
    match next(&mut events).await {
        Ok(Event::Reset(_)) => {}
        other => panic!("{id}: the first item must be a Reset, got {other:?}"),
    }

    if let Some(outage) = outage {
        // 2 and 3. An outage is an Unavailable error on a stream that goes on.
        outage.begin().await;
        loop {
            match next(&mut events).await {
                Err(e) if e.makes_stale() => break,
                _ => {}
            }
        }
        outage.end().await;
        // 3. Then a Reset, on the same stream.
        loop {
            if let Ok(Event::Reset(_)) = next(&mut events).await {
                break;
            }
        }
    }

    // 4. The stream is still open: it either waits or has more to say.
    if let Ok(None) = tokio::time::timeout(Duration::from_millis(300), events.next()).await {
        panic!("{id}: the event stream ended");
    }
}
