//! The contract test itself: it passes for the in-memory registry, whose
//! outage is an `Unavailable` error followed by a fresh `Reset`, and fails
//! for a registry that breaks a clause.
#![allow(clippy::expect_used)]

use sextant_core::{Error, MemoryRegistry, Registry, RegistryId};
use sextant_testkit::contract::{NoOutage, Outage, registry_contract};

struct Blip(MemoryRegistry);

impl Outage for Blip {
    async fn begin(&mut self) {
        self.0.fail(|| Error::unavailable("the source went away"));
    }
    async fn end(&mut self) {
        let services = self.0.services();
        self.0.reset(services);
    }
}

#[tokio::test]
async fn the_memory_registry_keeps_the_contract() {
    let registry = MemoryRegistry::new("memory/contract");
    registry.insert(sextant_core::Service::new("a.svc"));
    registry_contract(&registry, Some(&mut Blip(registry.clone()))).await;
}

/// A registry whose first item is an Apply, not a Reset.
struct ApplyFirst(RegistryId);

impl Registry for ApplyFirst {
    fn id(&self) -> &RegistryId {
        &self.0
    }
    fn watch(&self) -> sextant_core::EventStream {
        use futures::StreamExt;
        futures::stream::iter([Ok(sextant_core::Event::Apply(sextant_core::Service::new(
            "a.svc",
        )))])
        .chain(futures::stream::pending())
        .boxed()
    }
}

#[tokio::test]
#[should_panic(expected = "the first item must be a Reset")]
async fn a_registry_that_starts_with_an_apply_fails_it() {
    registry_contract(
        &ApplyFirst(RegistryId::new("bad/first")),
        None::<&mut NoOutage>,
    )
    .await;
}
