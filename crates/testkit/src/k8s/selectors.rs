//! Label and field selectors, parsed and matched as the API server does.

use super::*;

/// A parsed label or field selector: every requirement must hold.
#[derive(Clone, Default)]
pub(super) struct Selector(Vec<Requirement>);

#[derive(Clone)]
pub(super) enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

impl Selector {
    pub(super) fn parse(text: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        // Split on commas outside parentheses.
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let set = |s: &str| -> Result<Vec<String>, String> {
                let s = s.trim();
                let inner = s
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(|| format!("expected (values) in {part:?}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotIn(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(v)?)
            } else if let Some((k, v)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set(v)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(k.trim().into())
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(part.into())
            } else {
                return Err(format!("unable to parse requirement: {part:?}"));
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    pub(super) fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(&v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(&v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::Absent(k) => get(k).is_none(),
        })
    }
}

/// What one list or watch asks for.
#[derive(Clone)]
pub(super) struct Filter {
    pub(super) kind: Kind,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) labels: Selector,
    pub(super) fields: Selector,
}

impl Filter {
    pub(super) fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        let s = |v: &Value| v.as_str().map(str::to_owned);
        if let Some(ns) = &self.namespace
            && meta["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        if let Some(name) = &self.name
            && meta["name"].as_str() != Some(name)
        {
            return false;
        }
        self.labels.matches(|k| s(&meta["labels"][k]))
            && self.fields.matches(|k| match k {
                "metadata.name" => s(&meta["name"]),
                "metadata.namespace" => s(&meta["namespace"]),
                _ => None,
            })
    }
}
