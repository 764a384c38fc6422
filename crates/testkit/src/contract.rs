//! What "a registry works" means, as one test every adapter runs against
//! its own source: [`registry_contract`]. Like tower's `tower-test`, it
//! states the contract once instead of each adapter's tests restating it.
//!
//! The contract (see `sextant_core::Registry`):
//! 1. the stream's first item is a `Reset`: the registry's whole state, even
//!    if empty, before any `Apply` or `Delete`;
//! 2. errors travel on the stream and never end it;
//! 3. when the source goes away the registry says so with an error that
//!    makes its contribution stale (`Error::Unavailable`), and when the
//!    source is back it sends a `Reset` again, so that the aggregator can
//!    swap in the fresh state and clear the staleness;
//! 4. the stream never ends.
//!
//! A `Delete` of a hostname the registry never reported is allowed (an
//! adapter may not know what it sent); the aggregator ignores it, which
//! `sextant-aggregate`'s tests check, so it is not part of this test.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use sextant_core::{Event, Registry};

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

/// Checks the contract above against `registry`, whose source must be up
/// (and synced) when called. With an `outage` (not [`NoOutage`]), also
/// takes the source away and brings it back. Panics, naming the clause,
/// when the registry breaks it; every wait is bounded.
pub async fn registry_contract<O: Outage>(registry: &dyn Registry, outage: Option<&mut O>) {
    let id = registry.id().to_string();
    let mut events = registry.watch();

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
