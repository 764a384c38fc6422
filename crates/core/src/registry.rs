//! The contract every registry adapter implements.

use std::fmt;
use std::sync::Arc;

use futures::stream::BoxStream;

use crate::error::Error;
use crate::model::{Hostname, Service};

/// Names a registry instance: `KIND/NAME`, such as `file/main`,
/// `k8s/cluster-a` or `consul/dc1`. Unique within one aggregator.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct RegistryId(Arc<str>);

impl RegistryId {
    /// Wraps an id; by convention `KIND/NAME`.
    pub fn new(id: impl AsRef<str>) -> Self {
        RegistryId(Arc::from(id.as_ref()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `/` (the whole id when there is none).
    pub fn kind(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for RegistryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RegistryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for RegistryId {
    fn from(s: &str) -> Self {
        RegistryId::new(s)
    }
}

impl From<String> for RegistryId {
    fn from(s: String) -> Self {
        RegistryId(Arc::from(s))
    }
}

/// What a source reports: a whole state, one item added or replaced, or one
/// removed. The same vocabulary serves services (`Event`, the default) and
/// traffic rules (`Event<Rule>`, from a [`crate::rules::RuleSource`]).
///
/// Items are whole: an [`Event::Apply`] of a service carries the service
/// with all of its endpoints as this registry knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<T: Keyed = Service> {
    /// The source's complete state, replacing everything it reported before.
    ///
    /// Send one after every full read of the source: the first one marks the
    /// source as synced, later ones recover from missed events (a watch
    /// that expired, a reconnect). Consumers swap it in whole, so a re-list
    /// never shows an empty view in between. A Reset also clears staleness
    /// and the object errors shown for the source.
    Reset(Vec<T>),
    /// Adds an item or replaces it entirely.
    Apply(T),
    /// Removes an item. Deleting an unknown key is not an error.
    Delete(T::Key),
    /// The source was read in full and nothing changed since what this
    /// stream last reported: the registry counts as synced now (its
    /// `last_sync` moves, staleness ends) and keeps what it holds, object
    /// errors included. A polling source sends this instead of repeating a
    /// `Reset` (see [`crate::recover::poll`]). Before the first `Reset`, or
    /// after the aggregator dropped a stale registry, it means nothing.
    Unchanged,
    /// The object named (as in an earlier [`Error::InvalidObject`]) is
    /// readable again, or gone: its problem is over and leaves the
    /// source's status, without the whole source being sent again. What
    /// the object now contributes comes in its own `Apply` or `Delete`.
    ///
    /// [`Error::InvalidObject`]: crate::Error::InvalidObject
    Resolved(String),
}

/// What identifies an item of an [`Event`] stream: a service's hostname, a
/// rule's namespace and name.
pub trait Keyed {
    /// The key.
    type Key: Clone + fmt::Debug + PartialEq + Eq + Send + Sync + 'static;
    /// This item's key.
    fn key(&self) -> Self::Key;
}

impl Keyed for Service {
    type Key = Hostname;
    fn key(&self) -> Hostname {
        self.hostname.clone()
    }
}

/// The events that take a source from reporting `before` to reporting
/// `after` (each whole, keyed by [`Keyed::key`]): an `Apply` for each item
/// new or changed, a `Delete` for each gone, in key order. For adapters
/// that read their source whole and send only what changed.
pub fn changes<T>(before: &[T], after: &[T]) -> Vec<Event<T>>
where
    T: Keyed + Clone + PartialEq,
    T::Key: Ord,
{
    use std::collections::BTreeMap;
    let old: BTreeMap<T::Key, &T> = before.iter().map(|t| (t.key(), t)).collect();
    let new: BTreeMap<T::Key, &T> = after.iter().map(|t| (t.key(), t)).collect();
    let mut out: Vec<Event<T>> = new
        .iter()
        .filter(|(k, t)| old.get(*k) != Some(*t))
        .map(|(_, t)| Event::Apply((*t).clone()))
        .collect();
    out.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| Event::Delete(k.clone())),
    );
    out
}

/// The stream a registry returns from [`Registry::watch`].
pub type EventStream = BoxStream<'static, Result<Event, Error>>;

/// A source of services: Kubernetes, Consul, etcd, files, or your own.
///
/// An adapter translates its platform into the canonical model and nothing
/// else: the aggregator merges, tracks readiness and staleness, and the xDS
/// layer talks to proxies.
///
/// The stream from [`Registry::watch`] is endless: errors travel on it as
/// `Err` items and do not end it. Start with a [`Event::Reset`] after the
/// first full read, then send [`Event::Apply`] and [`Event::Delete`]; report
/// an object you had to skip as [`Error::InvalidObject`] rather than drop it
/// silently, and send [`Event::Resolved`] with the same object name once it
/// is readable again or gone. After an outage, report
/// [`Error::Unavailable`] and send a fresh `Reset` when the source answers
/// again. [`crate::recover::resilient_task`]
/// does the reconnecting with jittered backoff, so an adapter writes one
/// connect-read-follow session that reports through an
/// [`crate::recover::EventSender`], as the built-in adapters do; a source
/// that can only be read whole uses [`crate::recover::poll`], which sends
/// [`Event::Unchanged`] for a read that found nothing new.
/// `sextant_testkit::contract::registry_contract` checks all of this.
///
/// Who validates: the adapter converts, the aggregator validates. Every
/// service is checked with [`Service::validate`] on arrival; a bad one is
/// refused whole, its last good version keeps serving and the reason shows
/// on `/debug/registryz`. An adapter does not drop a service because one
/// of its instances is odd: an object (or an instance) it cannot convert at
/// all is skipped and reported as [`Error::InvalidObject`], and the rest
/// counts. (The etcd adapter also checks a service document when it reads
/// its key, to name the key in the report; the outcome is the same.)
///
/// A complete adapter, polling a (pretend) inventory every few seconds
/// with [`crate::recover::poll`] (a source with a watch API writes a
/// session for [`crate::recover::resilient_task`] instead):
///
/// ```no_run
/// use std::time::Duration;
/// use sextant_core::{
///     Endpoint, Error, EventStream, Protocol, Registry, RegistryId, Service,
///     recover::{poll, Backoff, Read},
/// };
///
/// struct Inventory { id: RegistryId }
///
/// /// Stands in for a call to your own inventory system.
/// async fn fetch_inventory() -> Result<Vec<(String, String)>, std::io::Error> {
///     Ok(vec![("cart.shop.svc".into(), "10.0.0.7".into())])
/// }
///
/// /// Your platform's object to a service: a pure function, tested with tables.
/// fn to_service((host, ip): &(String, String)) -> Result<Service, String> {
///     let address = ip.parse()?;
///     Ok(Service::new(host.as_str())
///         .with_port("http", 8080, Protocol::Http)
///         .with_endpoint(Endpoint::new(address)))
/// }
///
/// /// One full read. An unreachable inventory is `Unavailable` (the registry
/// /// is marked stale and read again after a backoff); a bad object is
/// /// skipped and reported, once, until it is fixed; the rest still counts.
/// async fn read() -> Result<Read<Service>, Error> {
///     let items = fetch_inventory()
///         .await
///         .map_err(|e| Error::unavailable_from("inventory unreachable", e))?;
///     let mut out = Read::default();
///     for item in &items {
///         match to_service(item) {
///             Ok(s) => out.items.push(s),
///             Err(reason) => out.problem(&item.0, reason),
///         }
///     }
///     Ok(out)
/// }
///
/// impl Registry for Inventory {
///     fn id(&self) -> &RegistryId { &self.id }
///
///     fn watch(&self) -> EventStream {
///         // Reads at once (readiness does not wait), then every 5 s; sends
///         // a Reset only when a read differs, `Unchanged` otherwise.
///         poll(Backoff::default(), Duration::from_secs(5), read)
///     }
/// }
/// ```
pub trait Registry: Send + Sync + 'static {
    /// This registry's id, such as `file/main`.
    fn id(&self) -> &RegistryId;

    /// Starts watching the source. Each call starts an independent watch
    /// that begins with a full read.
    fn watch(&self) -> EventStream;
}

/// A shared registry is a registry (a wrapper such as Sextant's DNS
/// resolution takes the `Arc<dyn Registry>` an embedder handed over).
impl<R: Registry + ?Sized> Registry for std::sync::Arc<R> {
    fn id(&self) -> &RegistryId {
        (**self).id()
    }

    fn watch(&self) -> EventStream {
        (**self).watch()
    }
}
