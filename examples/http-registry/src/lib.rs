//! A complete Sextant registry adapter in one file: it polls an HTTP
//! endpoint that returns the registry-file format as JSON
//! (`{"services": [...]}`) and reports what it finds.
//!
//! The parts every adapter has:
//! 1. conversion to [`Service`] (here serde does it: the inventory already
//!    speaks the model; a real one would map its own objects in a pure
//!    function and test it with tables);
//! 2. one full read, which keeps what converts and reports what does not
//!    ([`Read::problem`]), and returns `Unavailable` when the source cannot
//!    be read;
//! 3. [`poll`] around it: it reads at once (readiness does not wait), then
//!    every interval, sends a `Reset` only when a read differs (and
//!    `Unchanged` otherwise, so nothing is logged again), reports each bad
//!    object once until it is fixed, backs off while the source is down and
//!    stops when nobody listens. A source with a watch or long-poll API
//!    (etcd, Consul's blocking queries, Kubernetes) writes a
//!    connect-read-follow session for `resilient_task` instead, as the
//!    built-in adapters do.
//!
//! Who validates: the adapter only converts. The aggregator validates every
//! service it receives, refuses a bad one whole (keeping its last good
//! version) and shows why on `/debug/registryz`; an object the adapter
//! cannot turn into a service at all is reported with `problem`.
//!
//! This crate builds on its own: copy the directory out, point the
//! `sextant` dependency at a version or a path, and `cargo build`.

#![forbid(unsafe_code)]

use std::time::Duration;

use serde::Deserialize;
use sextant::core::recover::{Backoff, Read, poll};
use sextant::core::{Error, EventStream, Registry, RegistryId, Service};

#[derive(Deserialize)]
struct Inventory {
    services: Vec<serde_json::Value>,
}

/// Polls `url` every `interval`.
pub struct HttpRegistry {
    id: RegistryId,
    url: String,
    interval: Duration,
}

impl HttpRegistry {
    /// A registry `http/NAME` polling `url`.
    pub fn new(name: &str, url: impl Into<String>, interval: Duration) -> Self {
        HttpRegistry {
            id: RegistryId::new(format!("http/{name}")),
            url: url.into(),
            interval,
        }
    }
}

/// One full read of the inventory: the services that decode, and a problem
/// for each entry that does not. `Unavailable` when it cannot be read.
async fn read(client: &reqwest::Client, url: &str) -> Result<Read<Service>, Error> {
    let inventory: Inventory = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::unavailable_from(format!("GET {url} failed"), e))?
        .json()
        .await
        .map_err(|e| Error::unavailable_from(format!("GET {url}: not an inventory"), e))?;
    let mut out = Read::default();
    for (i, raw) in inventory.services.into_iter().enumerate() {
        // One bad entry is skipped and reported; the rest still count.
        match serde_json::from_value::<Service>(raw) {
            Ok(s) => out.items.push(s),
            Err(e) => out.problem(format!("{url} services[{i}]"), e.to_string()),
        }
    }
    Ok(out)
}

impl Registry for HttpRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch(&self) -> EventStream {
        let url = self.url.clone();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        poll(Backoff::default(), self.interval, move || {
            let (client, url) = (client.clone(), url.clone());
            async move { read(&client, &url).await }
        })
    }
}
