//! A complete Sextant registry adapter in one file: it polls an HTTP
//! endpoint that returns the registry-file format as JSON
//! (`{"services": [...]}`) and reports what it finds.
//!
//! The three parts every adapter has:
//! 1. conversion to [`Service`] (here serde does it: the inventory already
//!    speaks the model; a real one would map its own objects in a pure
//!    function and test it with tables);
//! 2. one *session*: read, report through an [`EventSender`] (`reset`,
//!    `apply`, `delete`, and `invalid` for an object it had to skip),
//!    repeat; return `Unavailable` on failure;
//! 3. [`resilient_task`] around it, which reports that error and starts the
//!    next session with jittered backoff (the built-in adapters work so).

#![forbid(unsafe_code)]

use std::time::Duration;

use serde::Deserialize;
use sextant_core::recover::{Backoff, EventSender, resilient_task};
use sextant_core::{Error, EventStream, Registry, RegistryId, Service};

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

/// The inventory, or `Unavailable` when it cannot be read (which ends the
/// session; `resilient_task` starts the next after a backoff).
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Inventory, Error> {
    let response = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::unavailable_from(format!("GET {url} failed"), e))?;
    response
        .json()
        .await
        .map_err(|e| Error::unavailable_from(format!("GET {url}: not an inventory"), e))
}

/// One session: read the inventory, report all of it, wait, repeat.
async fn session(
    client: &reqwest::Client,
    url: &str,
    interval: Duration,
    tx: &EventSender,
) -> Result<(), Error> {
    loop {
        let inventory = fetch(client, url).await?;
        let mut services = Vec::new();
        let mut bad = Vec::new();
        for (i, raw) in inventory.services.into_iter().enumerate() {
            // One bad entry is skipped and reported; the rest still count.
            match serde_json::from_value::<Service>(raw) {
                Ok(s) => services.push(s),
                Err(e) => bad.push((format!("{url} services[{i}]"), e.to_string())),
            }
        }
        // A failed send means the stream was dropped: stop.
        if tx.reset(services).await.is_err() {
            return Ok(());
        }
        for (object, reason) in bad {
            if tx.invalid(object, reason).await.is_err() {
                return Ok(());
            }
        }
        tokio::time::sleep(interval).await;
    }
}

impl Registry for HttpRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch(&self) -> EventStream {
        let (url, interval) = (self.url.clone(), self.interval);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        resilient_task(Backoff::default(), move |tx| {
            let (client, url) = (client.clone(), url.clone());
            async move { session(&client, &url, interval, &tx).await }
        })
    }
}
