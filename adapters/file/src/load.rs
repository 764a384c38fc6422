//! Reading registry files: pure parsing plus a per-file cache of the last
//! good content. No watching here; `sextant check-config` uses this too.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use sextant_core::entries::{ServiceEntry, WorkloadEntry, services_from_entries};
use sextant_core::groups::{Board, WorkloadGroup};
use sextant_core::{Hostname, Rule, RuleKey, Service};

pub use crate::error::FileError;
pub use crate::parse::{FileContent, parse_file};
pub use crate::text::MAX_NESTING;
use crate::text::hostname_line;

/// True for the file names a directory contributes: `*.yaml`, `*.yml`,
/// `*.json`, not hidden (editors' swap and backup files are hidden or end
/// otherwise).
pub fn is_registry_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

/// The largest registry file read, in bytes. A file of 10,000 endpoints is
/// about 1 MB.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

struct Cached {
    digest: u64,
    result: Result<FileContent, Vec<FileError>>,
    last_good: Option<FileContent>,
}

/// What one load of every path produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Loaded {
    /// Every service, from good files and the last good content of bad ones.
    pub services: Vec<Service>,
    /// Every route rule and destination policy, likewise.
    pub rules: Vec<Rule>,
    /// Every problem, in path order.
    pub problems: Vec<FileError>,
    /// Every WorkloadGroup that can be served.
    pub groups: Vec<WorkloadGroup>,
}

/// Loads files and directories, remembering each file's last good content.
pub struct Loader {
    paths: Vec<PathBuf>,
    cache: HashMap<PathBuf, Cached>,
    /// Where the files' groups go and the entries registered from them
    /// come from (the services watch's loader only).
    board: Option<Arc<Board>>,
}

impl Loader {
    /// A loader for these files and directories.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Loader {
            paths,
            cache: HashMap::new(),
            board: None,
        }
    }

    /// A loader that hands the files' WorkloadGroups to `board` and
    /// serves the entries registered there beside the files' own.
    pub fn with_board(paths: Vec<PathBuf>, board: Arc<Board>) -> Self {
        Loader {
            board: Some(board),
            ..Loader::new(paths)
        }
    }

    /// The configured paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads everything again. Files whose bytes did not change are not
    /// parsed again. A file that is bad or unreadable now contributes its
    /// last good content; only a file that is gone (no directory entry at
    /// all) or says `services: []` contributes nothing.
    pub fn load(&mut self) -> Loaded {
        let mut problems = Vec::new();
        let mut files = Vec::new();
        for path in &self.paths {
            // A path once read as a file stays a file: replaced by a
            // directory it is unreadable, not an empty directory.
            let was_file = self.cache.contains_key(path);
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() && !was_file => match list_dir(path, &self.cache) {
                    Ok(list) => files.extend(list.into_iter().map(|p| (p, false))),
                    Err(e) => {
                        problems.push(FileError::Read {
                            path: path.clone(),
                            message: e.to_string(),
                        });
                        files.extend(self.known_under(path));
                    }
                },
                Err(e) if e.kind() != std::io::ErrorKind::NotFound && !was_file => {
                    // The directory (or the path to it) cannot be read: its
                    // files keep their last good content, each with its error.
                    let known = self.known_under(path);
                    if known.is_empty() {
                        files.push((path.clone(), true));
                    } else {
                        problems.push(FileError::Read {
                            path: path.clone(),
                            message: e.to_string(),
                        });
                        files.extend(known);
                    }
                }
                _ => files.push((path.clone(), true)),
            }
        }

        let mut seen: BTreeMap<Hostname, PathBuf> = BTreeMap::new();
        let mut seen_rules: BTreeMap<RuleKey, PathBuf> = BTreeMap::new();
        let mut services = Vec::new();
        let mut rules = Vec::new();
        let mut live = HashMap::new();
        let mut service_entries = Vec::new();
        let mut workload_entries = Vec::new();
        let mut groups: Placed<WorkloadGroup> = Vec::new();
        for (path, explicit) in files {
            let (contribution, problem) = self.read_one(&path, explicit);
            if let Some(cached) = self.cache.remove(&path) {
                live.insert(path.clone(), cached);
            }
            problems.extend(problem);
            for (line, e) in contribution.service_entries {
                service_entries.push((path.clone(), line, e));
            }
            for (line, e) in contribution.workload_entries {
                workload_entries.push((path.clone(), line, e));
            }
            for (line, g) in contribution.workload_groups {
                groups.push((path.clone(), line, g));
            }
            for rule in contribution.rules {
                if let Some(first) = seen_rules.get(&rule.key) {
                    problems.push(FileError::DuplicateRule {
                        path: path.clone(),
                        key: rule.key.clone(),
                        first: first.clone(),
                    });
                    continue;
                }
                seen_rules.insert(rule.key.clone(), path.clone());
                rules.push(rule);
            }
            for service in contribution.services {
                if let Some(first) = seen.get(&service.hostname) {
                    // Rare: read the text again only to point at the line.
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    problems.push(FileError::Duplicate {
                        path: path.clone(),
                        line: hostname_line(&text, &service.hostname),
                        hostname: service.hostname.clone(),
                        first: first.clone(),
                    });
                    continue;
                }
                seen.insert(service.hostname.clone(), path.clone());
                services.push(service);
            }
        }
        let groups = served_groups(groups, &mut problems);
        if let Some(board) = &self.board {
            board.set_groups(groups.iter().cloned());
            // Registered by workloads of the groups: joined like the files'
            // own (placed at no line: no file declared them).
            workload_entries.extend(board.entries().into_iter().map(|e| (PathBuf::new(), 0, e)));
        }
        for (path, line, service) in
            entry_services(service_entries, workload_entries, &mut problems)
        {
            if let Some(first) = seen.get(&service.hostname) {
                problems.push(FileError::Duplicate {
                    path,
                    line,
                    hostname: service.hostname.clone(),
                    first: first.clone(),
                });
                continue;
            }
            seen.insert(service.hostname.clone(), path);
            services.push(service);
        }
        // Files no longer listed are forgotten.
        self.cache = live;
        Loaded {
            services,
            rules,
            problems,
            groups,
        }
    }

    /// One file: its contribution and its problem, if any.
    fn read_one(&mut self, path: &Path, explicit: bool) -> (FileContent, Vec<FileError>) {
        let bytes = match read_bounded(path) {
            Ok(b) => b,
            Err(e) => {
                let gone = e.kind() == std::io::ErrorKind::NotFound
                    && std::fs::symlink_metadata(path)
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
                if gone {
                    // Deleted: the one way, with `services: []`, to remove a
                    // file's services. A named file is still reported.
                    self.cache.remove(path);
                    let problem = explicit.then(|| FileError::NotFound {
                        path: path.to_owned(),
                    });
                    return (FileContent::default(), problem.into_iter().collect());
                }
                // Unreadable (a directory in its place, a symlink loop or a
                // dangling symlink, permissions, I/O): keep the last good.
                let message = if e.kind() == std::io::ErrorKind::NotFound {
                    "dangling symlink".to_owned()
                } else {
                    e.to_string()
                };
                let error = FileError::Read {
                    path: path.to_owned(),
                    message,
                };
                let last_good = self.cache.get(path).and_then(|c| c.last_good.clone());
                return (last_good.unwrap_or_default(), vec![error]);
            }
        };
        // A zero-byte file is a file being written (editors truncate, then
        // write): keep what it held. `services: []` empties a file on purpose.
        if bytes.is_empty()
            && let Some(last_good) = self.cache.get(path).and_then(|c| c.last_good.clone())
        {
            return (last_good, Vec::new());
        }
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let digest = hasher.finish();
        let entry = match self.cache.remove(path) {
            Some(c) if c.digest == digest => c,
            previous => {
                let result = match String::from_utf8(bytes) {
                    Ok(text) => parse_file(path, &text),
                    Err(e) => Err(vec![FileError::Parse {
                        path: path.to_owned(),
                        line: 0,
                        column: 0,
                        message: format!("not UTF-8: {e}"),
                    }]),
                };
                let last_good = match &result {
                    Ok(content) => Some(content.clone()),
                    Err(_) => previous.and_then(|p| p.last_good),
                };
                Cached {
                    digest,
                    result,
                    last_good,
                }
            }
        };
        let out = match &entry.result {
            Ok(content) => (content.clone(), Vec::new()),
            Err(e) => (entry.last_good.clone().unwrap_or_default(), e.clone()),
        };
        self.cache.insert(path.to_owned(), entry);
        out
    }
}

/// A file's entries, each with its file and line.
type Placed<T> = Vec<(PathBuf, usize, T)>;

/// The groups that can be served: the first definition of each, and
/// only those that pass [`WorkloadGroup::check`]; the others are problems
/// at their line.
fn served_groups(
    groups: Placed<WorkloadGroup>,
    problems: &mut Vec<FileError>,
) -> Vec<WorkloadGroup> {
    let mut at: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut out = Vec::new();
    for (path, line, group) in groups {
        let object = group.object();
        let problem = match (at.get(&object), group.check()) {
            (Some(first), _) => Some(format!(
                "already defined in {}; this definition is ignored",
                first.display()
            )),
            (None, Err(e)) => Some(e),
            (None, Ok(())) => None,
        };
        match problem {
            Some(message) => problems.push(FileError::Entry {
                path,
                line,
                object,
                message,
            }),
            None => {
                at.insert(object, path);
                out.push(group);
            }
        }
    }
    out
}

/// The services the entries of every file declare (`sextant_core::entries`:
/// a selector picks workloads of any file), each with the file and line of
/// its entry; what is not served goes to `problems`. An entry (kind,
/// namespace, name) defined in two files: the first is used.
fn entry_services(
    service_entries: Placed<ServiceEntry>,
    workload_entries: Placed<WorkloadEntry>,
    problems: &mut Vec<FileError>,
) -> Placed<Service> {
    let mut at: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
    let mut once = |path: PathBuf, line: usize, object: String| {
        if let Some((first, _)) = at.get(&object) {
            problems.push(FileError::Entry {
                message: format!(
                    "already defined in {}; this definition is ignored",
                    first.display()
                ),
                path,
                line,
                object,
            });
            return false;
        }
        at.insert(object, (path, line));
        true
    };
    let ses: Vec<ServiceEntry> = service_entries
        .into_iter()
        .filter(|(path, line, e)| once(path.clone(), *line, e.object()))
        .map(|(_, _, e)| e)
        .collect();
    let wes: Vec<WorkloadEntry> = workload_entries
        .into_iter()
        .filter(|(path, line, e)| once(path.clone(), *line, e.object()))
        .map(|(_, _, e)| e)
        .collect();
    // Validated here, not only by the aggregator, so that `sextant
    // check-config` names the entry.
    let converted = services_from_entries(&ses, &wes).validated();
    let place = |object: &str| at.get(object).cloned().unwrap_or_default();
    for (object, message) in converted.problems {
        let (path, line) = place(&object);
        problems.push(FileError::Entry {
            path,
            line,
            object,
            message,
        });
    }
    let mut out = Vec::new();
    for service in converted.services {
        let object = converted
            .declared_by
            .get(&service.hostname)
            .cloned()
            .unwrap_or_default();
        let (path, line) = place(&object);
        out.push((path, line, service));
    }
    out
}

/// Reads `path`, refusing one longer than [`MAX_FILE_BYTES`]: by its size
/// before reading anything (a 100 MB file costs no memory), and by what is
/// read (a file still growing).
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{size} bytes, larger than the limit of {MAX_FILE_BYTES} bytes"
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than the limit of {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

impl Loader {
    /// The files under `dir` that the last load read, to keep serving their
    /// last good content while `dir` cannot be listed.
    fn known_under(&self, dir: &Path) -> Vec<(PathBuf, bool)> {
        let mut known: Vec<(PathBuf, bool)> = self
            .cache
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .map(|p| (p.clone(), false))
            .collect();
        known.sort();
        known
    }
}

/// The registry files of `dir`, in name order: every entry with a registry
/// file name except directories that were never read as files (a file
/// replaced by a directory, or by a broken symlink, is listed so that its
/// read fails and its last good content stays).
fn list_dir(dir: &Path, cache: &HashMap<PathBuf, Cached>) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_registry_file(&path) && (!path.is_dir() || cache.contains_key(&path)) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests;
