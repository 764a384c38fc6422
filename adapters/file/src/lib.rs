//! A registry read from YAML or JSON files, or directories of them, reloaded
//! when they change.
//!
//! Format (the fields are [`sextant_core::Service`]'s):
//!
//! ```yaml
//! services:
//!   - hostname: reviews.default.svc     # required; the key that merges registries
//!     namespace: default                # optional, default "default"
//!     labels: { app: reviews }
//!     ports:
//!       - { name: http, port: 9080, protocol: HTTP }   # protocol optional: from the name
//!     endpoints:
//!       - address: 127.0.0.1
//!         ports: { http: 19080 }        # target port per service port; omitted = same
//!         labels: { version: v1 }
//!         locality: { region: eu-west, zone: eu-west-1a }
//!         weight: 1                     # default 1
//!         health: HEALTHY               # HEALTHY | UNHEALTHY | DRAINING | UNKNOWN
//! ```
//!
//! Behaviour:
//! - A path is a file or a directory; a directory contributes its `*.yaml`,
//!   `*.yml` and `*.json` files (not hidden ones, not sub-directories), in
//!   name order. The first file that defines a hostname wins; a second
//!   definition is reported.
//! - The parent directory of every named file is watched (inotify), so
//!   editors that save through a rename and Kubernetes ConfigMap volumes
//!   (a symlink swap) are seen. Changes are debounced, then everything is
//!   read again; files whose bytes did not change are not parsed again.
//!   The first read is sent as a `Reset`; later ones send what changed
//!   (services applied or deleted, problems that are new or over).
//! - A file that does not parse or validate never replaces its last good
//!   content: the error (file, line, column, message) is sent on the event
//!   stream, so it shows in the aggregator's status, and the old services
//!   keep being served. A zero-byte file is taken as being written and also
//!   keeps its last content; write `services: []` to empty a file.
//! - Only an intended removal removes services: the file deleted (no
//!   directory entry left; a named file is then also reported as not
//!   found), or its content `services: []`. A file that cannot be read
//!   keeps its last good content and reports why: a directory or a symlink
//!   loop in its place, a dangling symlink, permissions, an I/O error, and
//!   the same for every file of a directory that cannot be listed. A path
//!   once read as a file stays a file (a directory put in its place is an
//!   error, not an empty directory).
//!
//! Start reading at [`FileRegistry`] and [`load::Loader`].

#![forbid(unsafe_code)]

mod error;
pub mod load;
mod parse;
mod text;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use notify::{RecursiveMode, Watcher};
use sextant_core::groups::Board;
use sextant_core::{Error, Event, EventStream, Registry, RegistryId, Rule, RuleSource, RuleStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

pub use load::{FileContent, FileError, Loaded, Loader, parse_file};

/// Tuning of a [`FileRegistry`].
#[derive(Clone, Debug)]
pub struct FileRegistryConfig {
    /// Quiet time after a change before reading. Default 100 ms: editors
    /// write a file in several steps within a few milliseconds, and a
    /// tenth of a second is below what a person notices.
    pub debounce: Duration,
    /// How often to read everything when change notification cannot be set
    /// up (no inotify, a directory that does not exist yet). Default 2 s.
    pub poll_interval: Duration,
}

impl Default for FileRegistryConfig {
    fn default() -> Self {
        FileRegistryConfig {
            debounce: Duration::from_millis(100),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// A registry of files and directories; see the crate docs for the format.
pub struct FileRegistry {
    id: RegistryId,
    paths: Vec<PathBuf>,
    config: FileRegistryConfig,
    board: Arc<Board>,
}

impl FileRegistry {
    /// A registry with id `id` (conventionally `file/NAME`) over `paths`.
    pub fn new(id: impl Into<RegistryId>, paths: Vec<PathBuf>, config: FileRegistryConfig) -> Self {
        FileRegistry {
            id: id.into(),
            paths,
            config,
            board: Board::new(),
        }
    }

    /// The files' WorkloadGroups, and the entries VMs register from them
    /// (kept in this process: a file cannot be written to): served with
    /// the files' own entries, so the files' ServiceEntries select them.
    pub fn workload_groups(&self) -> Arc<Board> {
        Arc::clone(&self.board)
    }

    /// This registry with `board` for its groups and registered entries
    /// (a second registry over the same files, built for the rules, needs
    /// none).
    pub fn with_board(mut self, board: Arc<Board>) -> Self {
        self.board = board;
        self
    }
}

/// The files' problems, keyed by where they are (`path:line`).
fn problems(loaded: &Loaded) -> Vec<(String, String)> {
    loaded
        .problems
        .iter()
        .map(|p| (p.location(), p.reason()))
        .collect()
}

/// What a reload sends on the services stream: the first, a full state
/// and every problem of the files (those of rules included: a bad rule
/// keeps the whole file's last good content, services and rules alike);
/// later ones, what changed since `last`: services applied or deleted,
/// problems over (`Resolved`) and new.
fn events_of(last: Option<&Loaded>, loaded: &Loaded) -> Vec<Result<Event, Error>> {
    let (mut out, before) = match last {
        None => (vec![Ok(Event::Reset(loaded.services.clone()))], Vec::new()),
        Some(last) => (
            sextant_core::changes(&last.services, &loaded.services)
                .into_iter()
                .map(Ok)
                .collect(),
            problems(last),
        ),
    };
    let now = problems(loaded);
    for (object, _) in &before {
        if !now.iter().any(|(o, _)| o == object) {
            out.push(Ok(Event::Resolved(object.clone())));
        }
    }
    for (object, reason) in &now {
        if !before.iter().any(|(o, r)| o == object && r == reason) {
            out.push(Err(Error::invalid_object(object.clone(), reason.clone())));
        }
    }
    out
}

/// What a reload sends on the rules stream: the full set of rules first,
/// then what changed. The files' problems are reported once, on the
/// services stream.
fn rule_events_of(last: Option<&Loaded>, loaded: &Loaded) -> Vec<Result<Event<Rule>, Error>> {
    match last {
        None => vec![Ok(Event::Reset(loaded.rules.clone()))],
        Some(last) => sextant_core::changes(&last.rules, &loaded.rules)
            .into_iter()
            .map(Ok)
            .collect(),
    }
}

/// What one reload of the files becomes on a stream, given the last.
type EventsOf<T> = fn(Option<&Loaded>, &Loaded) -> Vec<Result<Event<T>, Error>>;

struct WatchState<T: sextant_core::Keyed> {
    loader: Loader,
    paths: Vec<PathBuf>,
    last: Option<Loaded>,
    changes: mpsc::UnboundedReceiver<()>,
    /// Moves when a workload registers or leaves (services watch only).
    registered: Option<tokio::sync::watch::Receiver<u64>>,
    // Kept alive for as long as the stream: dropping it stops notification.
    _watcher: Option<notify::RecommendedWatcher>,
    poll: Option<Duration>,
    debounce: Duration,
    queue: std::collections::VecDeque<Result<Event<T>, Error>>,
    events: EventsOf<T>,
    /// True when only what `events` reports matters: a change to the
    /// rest of the files sends nothing.
    same: fn(&Loaded, &Loaded) -> bool,
}

/// Watches the directories of `paths`; sends on `tx` when something there
/// may have changed the registry files (see [`concerns`]).
pub fn start_watcher(
    paths: &[PathBuf],
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let names: std::collections::HashSet<std::ffi::OsString> = paths
        .iter()
        .filter_map(|p| p.file_name().map(ToOwned::to_owned))
        .collect();
    // A directory of registry files: everything in it counts.
    let whole_dirs = paths.iter().any(|p| p.is_dir());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // A watcher error means: read again (reading is cheap when nothing
        // changed). Other files of the directory do not: a log written
        // beside the registry file would otherwise keep the debounce from
        // ever seeing quiet, delaying every change by its 2 s cap.
        let read_again = match &event {
            Err(_) => true,
            Ok(e) => whole_dirs || concerns(e, &names),
        };
        if read_again {
            let _ = tx.send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            if p.is_dir() {
                p.clone()
            } else {
                match p.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
                    _ => PathBuf::from("."),
                }
            }
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// Whether a change in a watched directory may change the registry files
/// named `names`: one of them was written, created, moved or removed (an
/// editor's rename onto the file included), or Kubernetes' atomic writer
/// swapped its `..data` link (a mounted ConfigMap's update, which touches
/// no file by its own name), or notify could not say which file.
///
/// A read is not a change: the registry's own reads (its services watch and
/// its rules watch read the same files) would otherwise wake each other in
/// turn, and the debounce would never see quiet.
fn concerns(event: &notify::Event, names: &std::collections::HashSet<std::ffi::OsString>) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    if let EventKind::Access(kind) = event.kind
        && kind != AccessKind::Close(AccessMode::Write)
    {
        return false;
    }
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| {
                names.contains(n) || n.to_str().is_some_and(|n| n.starts_with(".."))
            })
        })
}

impl Registry for FileRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch(&self) -> EventStream {
        self.watch_with(events_of, |a, b| a == b, Some(&self.board))
    }
}

/// The files' `routes:` and `policies:`: the same files, read by a watch of
/// their own (parsing a file twice is cheap next to a second code path).
impl RuleSource for FileRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch_rules(&self) -> RuleStream {
        self.watch_with(rule_events_of, |a, b| a.rules == b.rules, None)
    }
}

impl FileRegistry {
    fn watch_with<T: sextant_core::Keyed + Send + 'static>(
        &self,
        events: EventsOf<T>,
        same: fn(&Loaded, &Loaded) -> bool,
        board: Option<&Arc<Board>>,
    ) -> futures::stream::BoxStream<'static, Result<Event<T>, Error>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (watcher, poll) = match start_watcher(&self.paths, tx) {
            Ok(w) => (Some(w), None),
            Err(e) => {
                warn!(registry = %self.id, error = %e, poll_s = self.config.poll_interval.as_secs_f64(),
                    "cannot watch registry files for changes; polling instead");
                (None, Some(self.config.poll_interval))
            }
        };
        let loader = match board {
            Some(b) => Loader::with_board(self.paths.clone(), Arc::clone(b)),
            None => Loader::new(self.paths.clone()),
        };
        let mut registered = board.map(|b| b.changes());
        if let Some(r) = &mut registered {
            r.mark_unchanged();
        }
        let state = WatchState {
            loader,
            paths: self.paths.clone(),
            last: None,
            changes: rx,
            registered,
            _watcher: watcher,
            poll,
            debounce: self.config.debounce,
            queue: Default::default(),
            events,
            same,
        };
        let id = self.id.clone();
        let board = board.cloned();
        futures::stream::unfold(state, move |mut st| {
            let id = id.clone();
            let board = board.clone();
            async move {
                loop {
                    if let Some(item) = st.queue.pop_front() {
                        return Some((item, st));
                    }
                    if st.last.is_some() {
                        st.wait_for_change().await;
                    }
                    // Reading and parsing run on a blocking thread: however
                    // long a file takes, the threads that serve proxies and
                    // the admin port are not the ones waiting for it.
                    let mut loader = std::mem::replace(&mut st.loader, Loader::new(Vec::new()));
                    if let Some(r) = &mut st.registered {
                        r.mark_unchanged();
                    }
                    let (loader, loaded) = match tokio::task::spawn_blocking(move || {
                        let loaded = loader.load();
                        (loader, loaded)
                    })
                    .await
                    {
                        Ok(done) => done,
                        Err(e) => {
                            // The load panicked: its cache is lost; start over.
                            warn!(registry = %id, error = %e, "reading the registry files failed");
                            st.loader = match &board {
                                Some(b) => Loader::with_board(st.paths.clone(), Arc::clone(b)),
                                None => Loader::new(st.paths.clone()),
                            };
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    st.loader = loader;
                    if st.last.as_ref().is_none_or(|last| !(st.same)(last, &loaded)) {
                        debug!(registry = %id, services = loaded.services.len(), rules = loaded.rules.len(), problems = loaded.problems.len(), "registry files read");
                        st.queue.extend((st.events)(st.last.as_ref(), &loaded));
                        st.last = Some(loaded);
                    }
                }
            }
        })
        .boxed()
    }
}

impl<T: sextant_core::Keyed> WatchState<T> {
    /// Waits for a change notification (or the poll interval), then for the
    /// debounce quiet time, swallowing the notifications that arrive meanwhile.
    async fn wait_for_change(&mut self) {
        let (registered, poll, changes) = (&mut self.registered, self.poll, &mut self.changes);
        let registered = async {
            let open = match registered {
                Some(r) => r.changed().await.is_ok(),
                None => false,
            };
            if !open {
                std::future::pending::<()>().await;
            }
        };
        let files = async {
            match poll {
                Some(every) => {
                    tokio::time::sleep(every).await;
                    None
                }
                None => Some(changes.recv().await.is_none()),
            }
        };
        // A workload registered or left: read at once (the files are
        // cached; only the entries are converted again).
        let gone = tokio::select! {
            () = registered => return,
            gone = files => gone,
        };
        if gone == Some(true) {
            // The watcher is gone; fall back to polling.
            self.poll = Some(Duration::from_secs(2));
        }
        // Wait until the files are quiet, but read after at most 20 rounds so
        // that a file rewritten continuously is still picked up.
        for _ in 0..20 {
            tokio::time::sleep(self.debounce).await;
            let mut more = false;
            while self.changes.try_recv().is_ok() {
                more = true;
            }
            if !more {
                break;
            }
        }
    }
}
