//! Problems with settings, each naming where it is: the flag, or the
//! file, line and key the user wrote.

use super::*;

/// Every problem found, each naming where it is.
#[derive(Debug)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            writeln!(f, "error: {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The value of a setting and whether it came from the flag (which wins)
/// rather than the file.
pub(super) fn either<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<(T, bool)> {
    match (flag, file) {
        (Some(v), _) => Some((v.clone(), true)),
        (None, Some(v)) => Some((v.clone(), false)),
        (None, None) => None,
    }
}

pub(super) fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// True if `line` writes `key:` as a key: at its start, or inside a flow
/// mapping (`{ key: ...`, `, key: ...`).
pub(super) fn has_key(line: &str, key: &str) -> bool {
    let k = format!("{key}:");
    line.trim_start().starts_with(&k)
        || ["{", ","]
            .iter()
            .any(|sep| line.contains(&format!("{sep}{k}")) || line.contains(&format!("{sep} {k}")))
}

/// The 1-based line where `key` is written in `text`, or 0. A dotted key
/// (`debounce.endpoints`) is looked for inside its section, in block or
/// flow style; when the inner key is not written there, the section's line.
pub(super) fn key_line(text: &str, key: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut parts = key.split('.');
    let Some(first) = parts.next() else {
        return 0;
    };
    let Some(mut at) = lines
        .iter()
        .position(|l| indentation(l) == 0 && l.starts_with(&format!("{first}:")))
    else {
        return 0;
    };
    for part in parts {
        if has_key(
            &lines[at][indentation(lines[at])..].replacen(':', " ", 1),
            part,
        ) {
            continue;
        }
        let indent = indentation(lines[at]);
        let inside = lines[at + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indentation(l) > indent)
            .position(|l| has_key(l, part));
        match inside {
            Some(i) => at += 1 + i,
            None => break,
        }
    }
    at + 1
}

pub(super) struct Collector<'a> {
    pub(super) problems: Vec<String>,
    pub(super) file: Option<(&'a Path, &'a str)>,
}

impl Collector<'_> {
    /// Reports a problem with a value from a flag or the file. `key` is the
    /// file's key (dotted inside a section: `etcd.endpoints`); the flag is
    /// named after it (`--etcd-endpoints`).
    pub(super) fn bad(&mut self, key: &str, from_flag: bool, message: String) {
        let flag = format!("--{}", key.replace(['.', '_'], "-"));
        self.bad_flag(key, &flag, from_flag, message);
    }

    /// [`Collector::bad`] for a setting whose flag is named otherwise.
    pub(super) fn bad_flag(&mut self, key: &str, flag: &str, from_flag: bool, message: String) {
        match (from_flag, self.file) {
            (false, Some((path, text))) => self.problems.push(format!(
                "{}:{}: {key}: {message}",
                path.display(),
                key_line(text, key)
            )),
            _ => self.problems.push(format!("{flag}: {message}")),
        }
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        flag: &Option<String>,
        file: &Option<String>,
    ) -> Option<Duration> {
        let (value, from_flag) = match (flag, file) {
            (Some(v), _) => (v, true),
            (None, Some(v)) => (v, false),
            (None, None) => return None,
        };
        match humantime::parse_duration(value) {
            Ok(d) => Some(d),
            Err(e) => {
                self.bad(
                    key,
                    from_flag,
                    format!("{value:?} is not a duration ({e}); write e.g. 100ms, 30s, 5m"),
                );
                None
            }
        }
    }

    /// A size in bytes: a number, optionally with KiB, MiB or GiB.
    pub(super) fn size(
        &mut self,
        key: &str,
        flag: &Option<String>,
        file: &Option<String>,
    ) -> Option<usize> {
        let (value, from_flag) = match (flag, file) {
            (Some(v), _) => (v, true),
            (None, Some(v)) => (v, false),
            (None, None) => return None,
        };
        let v = value.trim();
        let (digits, unit) = v
            .find(|c: char| !c.is_ascii_digit())
            .map_or((v, ""), |i| v.split_at(i));
        let scale: Option<usize> = match unit.trim() {
            "" | "B" => Some(1),
            "KiB" => Some(1 << 10),
            "MiB" => Some(1 << 20),
            "GiB" => Some(1 << 30),
            _ => None,
        };
        match (digits.parse::<usize>(), scale) {
            (Ok(n), Some(scale)) if n > 0 => n.checked_mul(scale),
            _ => {
                self.bad(
                    key,
                    from_flag,
                    format!("{value:?} is not a size; write e.g. 4194304, 512KiB, 4MiB"),
                );
                None
            }
        }
    }

    pub(super) fn addr(
        &mut self,
        key: &str,
        flag: &Option<String>,
        file: &Option<String>,
    ) -> Option<SocketAddr> {
        let (value, from_flag) = either(flag, file)?;
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(
                    key,
                    from_flag,
                    format!("{value:?} is not an address; write IP:PORT, e.g. 127.0.0.1:15010"),
                );
                None
            }
        }
    }
}
