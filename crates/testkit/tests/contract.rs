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

struct RulesBlip(sextant_core::MemoryRules);

impl Outage for RulesBlip {
    async fn begin(&mut self) {
        self.0.fail(|| Error::unavailable("the source went away"));
    }
    async fn end(&mut self) {
        let rules = self.0.rules();
        self.0.reset(rules);
    }
}

#[tokio::test]
async fn the_memory_rule_source_keeps_the_contract() {
    let rules = sextant_core::MemoryRules::new("memory/rules");
    sextant_testkit::contract::rule_source_contract(&rules, Some(&mut RulesBlip(rules.clone())))
        .await;
}

/// A hand-driven stream, for the problems contract itself.
struct Driven {
    tx: tokio::sync::mpsc::UnboundedSender<Result<sextant_core::Event, Error>>,
    /// What mending sends: a Resolved (right) or a Reset (what the contract refuses).
    mend_with_reset: bool,
}

impl sextant_testkit::contract::Problem for Driven {
    async fn spoil(&mut self) {
        let _ = self
            .tx
            .send(Err(Error::invalid_object("thing x", "malformed")));
    }
    async fn mend(&mut self) {
        let event = if self.mend_with_reset {
            sextant_core::Event::Reset(Vec::new())
        } else {
            sextant_core::Event::Resolved("thing x".into())
        };
        let _ = self.tx.send(Ok(event));
    }
}

fn driven(mend_with_reset: bool) -> (Driven, sextant_core::EventStream) {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = tx.send(Ok(sextant_core::Event::Reset(Vec::new())));
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed();
    (
        Driven {
            tx,
            mend_with_reset,
        },
        stream,
    )
}

#[tokio::test]
async fn a_problem_retracted_by_name_keeps_the_problems_contract() {
    let (mut d, stream) = driven(false);
    sextant_testkit::contract::problems_contract("driven", stream, &mut d).await;
}

#[tokio::test]
#[should_panic(expected = "sent the whole source again")]
async fn a_problem_cleared_by_a_reset_fails_it() {
    let (mut d, stream) = driven(true);
    sextant_testkit::contract::problems_contract("driven", stream, &mut d).await;
}
