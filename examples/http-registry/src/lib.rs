//! A complete Sextant registry adapter in one file: it polls an HTTP
//! endpoint that returns the registry-file format as JSON
//! (`{"services": [...]}`) and reports what it finds.
//!
//! The three parts every adapter has:
//! 1. conversion to [`Service`] (here serde does it: the inventory already
//!    speaks the model; a real one would map its own objects in a pure
//!    function and test it with tables);
//! 2. one *session*: read, report, repeat; report `Unavailable` and end on
//!    failure;
//! 3. [`resilient`] around it, which reconnects with jittered backoff.

#![forbid(unsafe_code)]

use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use sextant_core::recover::{Backoff, resilient};
use sextant_core::{Error, Event, EventStream, Registry, RegistryId, Service};

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

/// One poll: every valid service, and an error per invalid one.
async fn poll(client: &reqwest::Client, url: &str) -> Result<(Vec<Service>, Vec<Error>), Error> {
    let response = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::unavailable_from(format!("GET {url} failed"), e))?;
    let inventory: Inventory = response
        .json()
        .await
        .map_err(|e| Error::unavailable_from(format!("GET {url}: not an inventory"), e))?;
    let mut services = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in inventory.services.into_iter().enumerate() {
        // One bad entry is skipped and reported; the rest still count.
        match serde_json::from_value::<Service>(raw) {
            Ok(s) => services.push(s),
            Err(e) => problems.push(Error::invalid_object(
                format!("{url} services[{i}]"),
                e.to_string(),
            )),
        }
    }
    Ok((services, problems))
}

impl Registry for HttpRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch(&self) -> EventStream {
        let (url, interval) = (self.url.clone(), self.interval);
        resilient(Backoff::default(), move || {
            let url = url.clone();
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default();
            // State: (first poll?, alive?). A failed poll ends the session.
            futures::stream::unfold((true, true), move |(first, alive)| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    if !alive {
                        return None;
                    }
                    if !first {
                        tokio::time::sleep(interval).await;
                    }
                    let items: Vec<Result<Event, Error>> = match poll(&client, &url).await {
                        Ok((services, problems)) => std::iter::once(Ok(Event::Reset(services)))
                            .chain(problems.into_iter().map(Err))
                            .collect(),
                        Err(e) => {
                            return Some((futures::stream::iter(vec![Err(e)]), (false, false)));
                        }
                    };
                    Some((futures::stream::iter(items), (false, true)))
                }
            })
            .flatten()
        })
        .boxed()
    }
}
