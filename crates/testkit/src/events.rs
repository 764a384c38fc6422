//! Reading a registry's event stream in tests, with bounded waits.

use std::time::Duration;

use futures::StreamExt;
use sextant_core::{Error, Event, EventStream, Service};

/// The next item; fails the test after 20 s or if the stream ends.
pub async fn next<T: sextant_core::Keyed>(
    w: &mut futures::stream::BoxStream<'static, Result<Event<T>, Error>>,
) -> Result<Event<T>, Error> {
    match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("the event stream ended"),
        Err(_) => panic!("no event within 20 s"),
    }
}

/// Reads items until one satisfies `want` (at most 200).
pub async fn until<T: sextant_core::Keyed>(
    w: &mut futures::stream::BoxStream<'static, Result<Event<T>, Error>>,
    want: impl Fn(&Result<Event<T>, Error>) -> bool,
) -> Result<Event<T>, Error> {
    for _ in 0..200 {
        let e = next(w).await;
        if want(&e) {
            return e;
        }
    }
    panic!("no matching event among 200");
}

/// Waits until the watched value satisfies `want` and returns it; fails the
/// test, naming `what`, after 30 s (a guard against hangs, not a timing).
pub async fn watch_until<T: Clone>(
    rx: &mut tokio::sync::watch::Receiver<T>,
    what: &str,
    want: impl FnMut(&T) -> bool,
) -> T {
    match tokio::time::timeout(Duration::from_secs(30), rx.wait_for(want)).await {
        Ok(Ok(value)) => value.clone(),
        Ok(Err(_)) => panic!("waiting for {what}: the sender is gone"),
        Err(_) => panic!("{what}: not within 30 s"),
    }
}

/// The service `e` applies, if it is an `Apply` of `host`.
pub fn apply_of(e: &Result<Event, Error>, host: &str) -> Option<Service> {
    match e {
        Ok(Event::Apply(s)) if s.hostname.as_str() == host => Some(s.clone()),
        _ => None,
    }
}

/// Reads until an `Apply` of `host` and returns that service (bounded as
/// [`until`]).
pub async fn next_apply(w: &mut EventStream, host: &str) -> Service {
    match apply_of(&until(w, |e| apply_of(e, host).is_some()).await, host) {
        Some(s) => s,
        None => unreachable!("until returned a matching event"),
    }
}

/// The next item, which must be a `Reset`; its services.
pub async fn next_reset(w: &mut EventStream) -> Vec<Service> {
    match next(w).await {
        Ok(Event::Reset(s)) => s,
        other => panic!("expected a reset, got {other:?}"),
    }
}

/// The addresses of a service's endpoints, sorted.
pub fn addresses(s: &Service) -> Vec<String> {
    let mut v: Vec<String> = s.endpoints.iter().map(|e| e.address.to_string()).collect();
    v.sort();
    v
}
