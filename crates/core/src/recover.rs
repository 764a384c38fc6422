//! Reconnecting with jittered backoff, written once for every adapter.
//!
//! An adapter writes one *session*: connect, read everything (send a
//! [`Event::Reset`]), then follow changes. When the source fails, the
//! session sends [`Error::Unavailable`] and ends. [`resilient`] turns such
//! sessions into the endless stream [`crate::Registry::watch`] returns: it
//! forwards every item, and when a session ends it waits a jittered,
//! growing delay and starts the next one.

use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::error::Error;
use crate::model::Service;
use crate::registry::{Event, Keyed};

/// Exponential backoff with jitter: the settings. Every field is public,
/// so `Backoff { max: Duration::from_secs(2), ..Default::default() }`
/// works; [`Backoff::delays`] gives the running sequence.
///
/// Each delay is drawn uniformly from `[d/2, d]` where `d` doubles after each
/// failed session, from `initial` up to `max`. The jitter keeps many replicas
/// from reconnecting to a recovering source in lockstep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First delay. Default 250 ms: quick enough that a blip is invisible.
    pub initial: Duration,
    /// Largest delay. Default 5 s: once an outage ends, the registry is
    /// read again within 5 s. (client-go's reflector and kube-rs's watcher
    /// cap at 30 s, which users see as half a minute of stale endpoints
    /// after the source is back.) While the source is down, each replica
    /// costs it one attempt every 2.5-5 s, which a failed connect or list
    /// does not make expensive.
    pub max: Duration,
    /// A session that synced and stayed up this long resets the delay to
    /// `initial`. Default 30 s: a source that accepts connections and then
    /// drops them at once keeps backing off instead of being hammered.
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(5))
    }
}

impl Backoff {
    /// A backoff from `initial` to `max`, resetting after 30 s of health.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            healthy_after: Duration::from_secs(30),
        }
    }

    /// The sequence of delays these settings give, from the first.
    pub fn delays(&self) -> Delays {
        Delays {
            current: self.initial,
            settings: self.clone(),
        }
    }
}

/// A running sequence of backoff delays (see [`Backoff::delays`]).
#[derive(Clone, Debug)]
pub struct Delays {
    settings: Backoff,
    current: Duration,
}

impl Delays {
    /// The next delay to wait; grows the one after it.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.settings.max);
        let half = d / 2;
        let jitter_ns = fastrand::u64(0..=half.as_nanos().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_nanos(jitter_ns)
    }

    /// Starts again from `initial`.
    pub fn reset(&mut self) {
        self.current = self.settings.initial;
    }
}

struct State<F, S> {
    connect: F,
    backoff: Delays,
    session: Option<std::pin::Pin<Box<S>>>,
    started: Instant,
    synced: bool,
    first: bool,
}

/// Runs sessions from `connect` one after another, forever.
///
/// Items are forwarded unchanged. When a session's stream ends, the next is
/// started after the next of [`Backoff::delays`]; the delay resets once a session
/// has sent a [`Event::Reset`] and lived [`Backoff::healthy_after`].
/// A session should send [`Error::Unavailable`] before it ends because of a
/// failure, so that the aggregator marks the registry stale; `resilient`
/// itself reports nothing.
pub fn resilient<T, F, S>(
    backoff: Backoff,
    connect: F,
) -> futures::stream::BoxStream<'static, Result<Event<T>, Error>>
where
    T: Keyed + Send + 'static,
    F: FnMut() -> S + Send + 'static,
    S: Stream<Item = Result<Event<T>, Error>> + Send + 'static,
{
    let state = State {
        connect,
        backoff: backoff.delays(),
        session: None,
        started: Instant::now(),
        synced: false,
        first: true,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.session.is_none() {
                if !st.first {
                    if st.synced && st.started.elapsed() >= st.backoff.settings.healthy_after {
                        st.backoff.reset();
                    }
                    let delay = st.backoff.next_delay();
                    tracing::debug!(
                        delay_ms = delay.as_millis() as u64,
                        "registry session ended, reconnecting after delay"
                    );
                    tokio::time::sleep(delay).await;
                }
                st.first = false;
                st.synced = false;
                st.started = Instant::now();
                st.session = Some(Box::pin((st.connect)()));
            }
            let Some(session) = st.session.as_mut() else {
                continue;
            };
            match session.next().await {
                Some(item) => {
                    if matches!(item, Ok(Event::Reset(_))) {
                        st.synced = true;
                    }
                    return Some((item, st));
                }
                None => st.session = None,
            }
        }
    })
    .boxed()
}

/// Where a session (see [`resilient_task`]) reports: the registry's state,
/// changes, and objects it had to skip. Every method waits while the
/// consumer is behind, and returns [`Closed`] once the stream was dropped:
/// the session should then return.
///
/// Services by default; `EventSender<Rule>` for a rule source.
#[derive(Debug)]
pub struct EventSender<T: Keyed = Service>(tokio::sync::mpsc::Sender<Result<Event<T>, Error>>);

impl<T: Keyed> Clone for EventSender<T> {
    fn clone(&self) -> Self {
        EventSender(self.0.clone())
    }
}

/// The event stream was dropped: nobody is listening any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the registry's event stream was dropped")]
pub struct Closed;

impl<T: Keyed> EventSender<T> {
    /// The whole state, after every full read of the source (the first one
    /// marks the registry synced; later ones clear staleness and problems).
    pub async fn reset(&self, items: Vec<T>) -> Result<(), Closed> {
        self.send(Ok(Event::Reset(items))).await
    }

    /// A service (or rule) added or changed, whole.
    pub async fn apply(&self, item: T) -> Result<(), Closed> {
        self.send(Ok(Event::Apply(item))).await
    }

    /// The source was read in full and nothing changed since what was last
    /// sent (see [`Event::Unchanged`]).
    pub async fn unchanged(&self) -> Result<(), Closed> {
        self.send(Ok(Event::Unchanged)).await
    }

    /// A service (or rule) removed, by its key.
    pub async fn delete(&self, key: T::Key) -> Result<(), Closed> {
        self.send(Ok(Event::Delete(key))).await
    }

    /// The object named `object` in an earlier [`EventSender::invalid`] is
    /// readable again or gone: its problem is over (see [`Event::Resolved`]).
    pub async fn resolved(&self, object: impl Into<String>) -> Result<(), Closed> {
        self.send(Ok(Event::Resolved(object.into()))).await
    }

    /// An object of the source that could not be turned into a service: it
    /// is skipped, and shown (with `object` naming it) until it is
    /// [`EventSender::resolved`] or the next `Reset`.
    pub async fn invalid(
        &self,
        object: impl Into<String>,
        reason: impl Into<String>,
    ) -> Result<(), Closed> {
        self.send(Err(Error::invalid_object(object, reason))).await
    }

    /// Reports how the problems shown went from `before` to `now` (each
    /// `(object, reason)`): the objects no longer in `now` as
    /// [`EventSender::resolved`], then what is new in `now`.
    pub async fn problems_changed(
        &self,
        before: &[(String, String)],
        now: &[(String, String)],
    ) -> Result<(), Closed> {
        for (object, _) in before {
            if !now.iter().any(|(o, _)| o == object) {
                self.resolved(object.clone()).await?;
            }
        }
        for (object, reason) in now {
            if !before.iter().any(|(o, r)| o == object && r == reason) {
                self.invalid(object.clone(), reason.clone()).await?;
            }
        }
        Ok(())
    }

    /// Any item, as the stream carries it.
    pub async fn send(&self, item: Result<Event<T>, Error>) -> Result<(), Closed> {
        self.0.send(item).await.map_err(|_| Closed)
    }
}

/// [`resilient`] for sessions written as an async function rather than a
/// stream: each session runs as a task that sends its events on an
/// [`EventSender`]; returning `Err` reports the error and ends the session,
/// after which the next one starts with backoff. When the stream is
/// dropped, the running session is cancelled (dropped at its next await),
/// also one that sends only on change and would otherwise poll on.
pub fn resilient_task<T, F, Fut>(
    backoff: Backoff,
    mut session: F,
) -> futures::stream::BoxStream<'static, Result<Event<T>, Error>>
where
    T: Keyed + Send + 'static,
    F: FnMut(EventSender<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    resilient(backoff, move || {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let tx = EventSender(tx);
        let run = session(tx.clone());
        tokio::spawn(async move {
            tokio::select! {
                result = run => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e.chain(), "registry session ended");
                        let _ = tx.send(Err(e)).await;
                    }
                }
                () = tx.0.closed() => {
                    tracing::debug!("registry stream dropped; session stopped");
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    })
}

/// What one full read of a polled source found: its items, in a stable
/// order (two reads of the same state must compare equal), and the objects
/// it had to skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read<T> {
    /// Every item read.
    pub items: Vec<T>,
    /// Objects skipped: (which object, why).
    pub problems: Vec<(String, String)>,
}

impl<T> Default for Read<T> {
    fn default() -> Self {
        Read {
            items: Vec::new(),
            problems: Vec::new(),
        }
    }
}

impl<T> Read<T> {
    /// Records an object that had to be skipped.
    pub fn problem(&mut self, object: impl Into<String>, reason: impl Into<String>) {
        self.problems.push((object.into(), reason.into()));
    }
}

/// A source that can only be read whole (an HTTP inventory, a database
/// table), polled: `read` runs at once, then every `every`; an `Err` from
/// it (report [`Error::Unavailable`]) marks the registry stale and the next
/// read follows `backoff`.
///
/// What is sent: after the first read of each session, and whenever the
/// items differ from the last read, a `Reset` and the read's problems (a
/// `Reset` clears the ones shown); while the items are the same, a problem
/// that is new on its own, and one that went away as
/// [`Event::Resolved`]; otherwise [`Event::Unchanged`], so `last_sync` on `/debug/registryz` stays "the
/// last successful read" and nothing is logged again. Dropping the stream
/// stops the polling.
pub fn poll<T, F, Fut>(
    backoff: Backoff,
    every: Duration,
    read: F,
) -> futures::stream::BoxStream<'static, Result<Event<T>, Error>>
where
    T: Keyed + Clone + PartialEq + Send + Sync + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Read<T>, Error>> + Send + 'static,
{
    let read = std::sync::Arc::new(read);
    // What was last reported, across sessions: a session after an outage
    // starts with a Reset anyway (it clears staleness).
    let last: std::sync::Arc<std::sync::Mutex<Option<Read<T>>>> = std::sync::Arc::default();
    resilient_task(backoff, move |tx: EventSender<T>| {
        let (read, last) = (read.clone(), last.clone());
        async move {
            let mut first = true;
            loop {
                let now = read().await?;
                let previous = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let sent = match previous {
                    // The same items: only the problems that changed are
                    // said, each keyed by its object.
                    Some(prev) if !first && prev.items == now.items => {
                        let same = prev.problems.len() == now.problems.len()
                            && prev.problems.iter().all(|p| now.problems.contains(p));
                        if same {
                            tx.unchanged().await
                        } else {
                            tx.problems_changed(&prev.problems, &now.problems).await
                        }
                    }
                    _ => match tx.reset(now.items.clone()).await {
                        Ok(()) => send_problems(&tx, now.problems.iter()).await,
                        Err(closed) => Err(closed),
                    },
                };
                if sent.is_err() {
                    return Ok(());
                }
                *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                first = false;
                tokio::time::sleep(every).await;
            }
        }
    })
}

async fn send_problems<'a, T: Keyed>(
    tx: &EventSender<T>,
    problems: impl IntoIterator<Item = &'a (String, String)>,
) -> Result<(), Closed> {
    for (object, reason) in problems {
        tx.invalid(object.clone(), reason.clone()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn task_sessions_report_their_error_and_restart() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let stream = resilient_task(
            Backoff::new(Duration::from_secs(1), Duration::from_secs(1)),
            move |tx: EventSender| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                async move {
                    let _ = tx.reset(vec![]).await;
                    Err(Error::unavailable(format!("session {n} lost")))
                }
            },
        );
        let items: Vec<_> = stream.take(4).collect().await;
        assert!(matches!(items[0], Ok(Event::Reset(_))));
        assert_eq!(
            items[1]
                .as_ref()
                .map_err(|e| e.to_string())
                .err()
                .as_deref(),
            Some("source unavailable: session 0 lost")
        );
        assert!(matches!(items[2], Ok(Event::Reset(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800)).delays();
        let mut bounds = vec![];
        for _ in 0..6 {
            bounds.push(b.next_delay());
        }
        let caps = [100, 200, 400, 800, 800, 800];
        for (d, cap) in bounds.iter().zip(caps) {
            let cap = Duration::from_millis(cap);
            assert!(
                *d >= cap / 2 && *d <= cap,
                "{d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        // Every setting is public: one can be changed and the rest kept.
        let quick = Backoff {
            max: Duration::from_secs(1),
            ..Default::default()
        };
        assert_eq!(quick.initial, Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_restart_after_a_delay_and_items_pass_through() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let stream = resilient(
            Backoff::new(Duration::from_secs(1), Duration::from_secs(8)),
            move || {
                let n = c.fetch_add(1, Ordering::SeqCst);
                futures::stream::iter(vec![
                    Ok(Event::<Service>::Reset(vec![])),
                    Err(Error::unavailable(format!("session {n} failed"))),
                ])
            },
        );
        let start = Instant::now();
        let items: Vec<_> = stream.take(6).collect().await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let errors: Vec<String> = items
            .iter()
            .filter_map(|i| i.as_ref().err().map(|e| e.to_string()))
            .collect();
        assert_eq!(
            errors,
            [
                "source unavailable: session 0 failed",
                "source unavailable: session 1 failed",
                "source unavailable: session 2 failed"
            ]
        );
        // Two waits: [0.5, 1] s then [1, 2] s, since the sessions were short.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1500) && waited <= Duration::from_secs(3),
            "{waited:?}"
        );
    }

    /// The polling helper: a Reset only when a read differs, each problem
    /// once and its end once (keyed by object, no Reset), `Unchanged`
    /// otherwise; a Reset again after an outage; and no more reads once the
    /// stream is dropped.
    #[tokio::test(start_paused = true)]
    async fn poll_reports_each_change_once_and_stops_when_dropped() {
        use std::collections::VecDeque;
        use std::sync::Mutex;

        fn read(items: &[&str], problems: &[&str]) -> Result<Read<Service>, Error> {
            let mut r = Read {
                items: items.iter().map(|h| Service::new(*h)).collect(),
                ..Default::default()
            };
            for p in problems {
                r.problem(*p, "broken");
            }
            Ok(r)
        }
        type Script = Arc<Mutex<VecDeque<Result<Read<Service>, Error>>>>;
        let script: Script = Arc::new(Mutex::new(VecDeque::from(vec![
            read(&["a"], &["bad1"]),
            read(&["a"], &["bad1"]),
            read(&["a"], &["bad1", "bad2"]),
            read(&["a"], &["bad2"]),
            read(&["a", "b"], &["bad2"]),
            Err(Error::unavailable("down")),
            read(&["a", "b"], &["bad2"]),
            read(&["a", "b"], &["bad2"]),
        ])));
        let calls = Arc::new(AtomicUsize::new(0));
        let (s2, c2) = (script.clone(), calls.clone());
        let mut stream = poll(
            Backoff::new(Duration::from_secs(1), Duration::from_secs(1)),
            Duration::from_secs(10),
            move || {
                c2.fetch_add(1, Ordering::SeqCst);
                let next = s2
                    .lock()
                    .expect("lock")
                    .pop_front()
                    .unwrap_or_else(|| read(&["a", "b"], &["bad2"]));
                async move { next }
            },
        );
        let mut seen = Vec::new();
        for _ in 0..12 {
            let item = stream.next().await.expect("an item");
            seen.push(match item {
                Ok(Event::Reset(items)) => format!(
                    "reset {}",
                    items
                        .iter()
                        .map(|s| s.hostname.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Ok(Event::Unchanged) => "unchanged".to_owned(),
                Ok(Event::Resolved(object)) => format!("resolved {object}"),
                Ok(other) => format!("{other:?}"),
                Err(Error::InvalidObject { object, .. }) => format!("invalid {object}"),
                Err(e) => format!("error {}", e.chain()),
            });
        }
        assert_eq!(
            seen,
            [
                "reset a",
                "invalid bad1",
                "unchanged",
                "invalid bad2",
                "resolved bad1",
                "reset a,b",
                "invalid bad2",
                "error source unavailable: down",
                "reset a,b",
                "invalid bad2",
                "unchanged",
                "unchanged",
            ]
        );
        drop(stream);
        tokio::task::yield_now().await;
        let after = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            after,
            "no reads after the drop"
        );
    }

    /// A session that sends only on change would never notice that nobody
    /// listens; dropping the stream cancels it.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_stream_cancels_a_quiet_session() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let mut stream = resilient_task(Backoff::default(), move |tx: EventSender| {
            let t = t.clone();
            async move {
                let _ = tx.reset(vec![]).await;
                loop {
                    t.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        assert!(matches!(stream.next().await, Some(Ok(Event::Reset(_)))));
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(stream);
        tokio::task::yield_now().await;
        let at_drop = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            ticks.load(Ordering::SeqCst) <= at_drop + 1,
            "the session went on polling"
        );
    }
}
