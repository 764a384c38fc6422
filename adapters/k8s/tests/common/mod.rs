//! The API-server double and a registry configured against it, shared by
//! the Kubernetes adapter's tests.
#![allow(dead_code, unreachable_pub, clippy::expect_used)]

use std::time::Duration;

use futures::stream::BoxStream;
use sextant_core::recover::Backoff;
use sextant_core::{Error, Event, EventStream, Registry, Rule, RuleSource};
use sextant_k8s::{K8sConfig, K8sRegistry};
use sextant_testkit::k8s::KubeDouble;

/// A rule source's stream.
pub type RuleEvents = BoxStream<'static, Result<Event<Rule>, Error>>;

pub struct Setup {
    pub double: KubeDouble,
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub async fn new() -> Setup {
        let double = KubeDouble::start().await;
        double.bookmark_every(Duration::from_millis(200));
        Setup {
            double,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn config(&self) -> K8sConfig {
        K8sConfig {
            kubeconfig: Some(self.double.kubeconfig(self.dir.path(), "test")),
            // Short server-side timeouts: watches are re-opened from their
            // last version many times during each test.
            watch_timeout: Duration::from_secs(1),
            page_size: 1,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_millis(500)),
            rediscover_every: Duration::from_millis(200),
            ..Default::default()
        }
    }

    /// The services stream.
    pub fn watch(&self) -> EventStream {
        K8sRegistry::new(self.config()).watch()
    }

    /// The rules stream.
    pub fn rules(&self) -> RuleEvents {
        K8sRegistry::new(self.config()).watch_rules()
    }
}
