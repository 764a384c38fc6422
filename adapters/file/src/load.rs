//! Reading registry files: pure parsing plus a per-file cache of the last
//! good content. No watching here; `sextant check-config` uses this too.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sextant_core::{Hostname, Rule, RuleKey, RuleProblems, Service, ValidationErrors};

pub use crate::parse::{FileContent, parse_file};

/// A problem with one registry file. The file's last good content, if any,
/// keeps being served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A file named explicitly does not exist: it contributes no services.
    #[error("{path}: file not found")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file or directory could not be read.
    #[error("{path}: cannot read: {message}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// The file is not valid YAML or JSON, or has the wrong shape.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A service in the file failed validation.
    #[error("{path}:{line}: {errors}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the service's `hostname` (0 when not found).
        line: usize,
        /// Every problem in that service.
        errors: ValidationErrors,
    },
    /// A route rule or destination policy in the file failed validation.
    #[error("{path}:{line}: {problems}")]
    InvalidRule {
        /// The file.
        path: PathBuf,
        /// 1-based line of the rule's entry (0 when not found).
        line: usize,
        /// What is wrong.
        problems: RuleProblems,
    },
    /// A rule (kind, namespace, name) defined in an earlier file is
    /// defined again.
    #[error("{path}: {key} is already defined in {first}; this definition is ignored")]
    DuplicateRule {
        /// The later file.
        path: PathBuf,
        /// The rule.
        key: RuleKey,
        /// The file that defines it first.
        first: PathBuf,
    },
    /// A hostname defined in an earlier file is defined again.
    #[error(
        "{path}:{line}: service {hostname:?} is already defined in {first}; this definition is ignored"
    )]
    Duplicate {
        /// The later file.
        path: PathBuf,
        /// 1-based line of the second definition (0 when not found).
        line: usize,
        /// The hostname.
        hostname: Hostname,
        /// The file that defines it first.
        first: PathBuf,
    },
}

impl FileError {
    /// What is wrong, without the location.
    pub fn reason(&self) -> String {
        match self {
            FileError::NotFound { .. } => "file not found".to_owned(),
            FileError::Read { message, .. } => format!("cannot read: {message}"),
            FileError::Parse { message, .. } => message.clone(),
            FileError::Invalid { errors, .. } => errors.to_string(),
            FileError::InvalidRule { problems, .. } => problems.to_string(),
            FileError::DuplicateRule { key, first, .. } => format!(
                "{key} is already defined in {}; this definition is ignored",
                first.display()
            ),
            FileError::Duplicate {
                hostname, first, ..
            } => {
                format!(
                    "service {hostname:?} is already defined in {}; this definition is ignored",
                    first.display()
                )
            }
        }
    }

    /// `path[:line[:column]]`, naming the object for the aggregator's status.
    pub fn location(&self) -> String {
        match self {
            FileError::NotFound { path } | FileError::Read { path, .. } => {
                path.display().to_string()
            }
            FileError::Parse {
                path, line, column, ..
            } => format!("{}:{line}:{column}", path.display()),
            FileError::DuplicateRule { path, .. } => path.display().to_string(),
            FileError::Invalid { path, line, .. }
            | FileError::InvalidRule { path, line, .. }
            | FileError::Duplicate { path, line, .. } => {
                format!("{}:{line}", path.display())
            }
        }
    }
}

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

/// How deep `[` and `{` may nest in a YAML file. A registry file needs
/// about six levels; the YAML parser's cost grows with the square of the
/// nesting, so 100,000 levels in a 200 KB file would take it a minute.
pub const MAX_NESTING: usize = 64;

/// The largest registry file read, in bytes. A file of 10,000 endpoints is
/// about 1 MB.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Checks that flow collections (`[`, `{`) in YAML `text` nest at most
/// [`MAX_NESTING`] deep, before the parser sees it; on failure, the 1-based
/// line and column where the limit is passed. Brackets inside quoted
/// scalars and comments do not count. Block-style nesting is bounded by
/// indentation and the file size.
pub(crate) fn check_nesting(text: &str) -> Result<(), (usize, usize)> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut prev = '\n';
    let (mut line, mut column) = (1, 0);
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        column += 1;
        if ch == '\n' {
            (line, column) = (line + 1, 0);
        }
        match quote {
            Some('\'') if ch == '\'' => {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    column += 1;
                } else {
                    quote = None;
                }
            }
            Some('"') if ch == '\\' => {
                chars.next();
                column += 1;
            }
            Some('"') if ch == '"' => quote = None,
            Some(_) => {}
            None => match ch {
                // A quote opens a quoted scalar only where a scalar starts.
                '\'' | '"' if matches!(prev, '\n' | ' ' | '\t' | ':' | '-' | '[' | '{' | ',') => {
                    quote = Some(ch);
                }
                '#' if matches!(prev, '\n' | ' ' | '\t') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            (line, column) = (line + 1, 0);
                            break;
                        }
                    }
                    prev = '\n';
                    continue;
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err((line, column));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = ch;
    }
    Ok(())
}

/// The 1-based line of the top-level `key:`, or 0.
pub(crate) fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(&format!("{key}:")))
        .map_or(0, |i| i + 1)
}

/// The 1-based line that defines `hostname`, or 0. Serde does not keep
/// positions for values, so this finds the `hostname` key with that value.
pub(crate) fn hostname_line(text: &str, hostname: &str) -> usize {
    text.lines()
        .position(|l| {
            l.contains("hostname") && {
                let value = l.split_once(':').map(|(_, v)| v).unwrap_or("");
                let value = value
                    .trim()
                    .trim_end_matches(',')
                    .trim_matches(['"', '\'', ' ']);
                value == hostname
            }
        })
        .map_or(0, |i| i + 1)
}

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
}

/// Loads files and directories, remembering each file's last good content.
pub struct Loader {
    paths: Vec<PathBuf>,
    cache: HashMap<PathBuf, Cached>,
}

impl Loader {
    /// A loader for these files and directories.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Loader {
            paths,
            cache: HashMap::new(),
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
        for (path, explicit) in files {
            let (contribution, problem) = self.read_one(&path, explicit);
            if let Some(cached) = self.cache.remove(&path) {
                live.insert(path.clone(), cached);
            }
            problems.extend(problem);
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
        // Files no longer listed are forgotten.
        self.cache = live;
        Loaded {
            services,
            rules,
            problems,
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
