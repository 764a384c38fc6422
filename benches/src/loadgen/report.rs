//! The results as a table: every figure for Sextant and the floor, and
//! their ratio.

use super::*;

/// The result as a table for people (on stderr; stdout stays JSON): one row
/// per figure, Sextant's, the floor's, and their ratio.
pub(super) fn table(result: &serde_json::Value) -> String {
    table_against(result, "floor")
}

/// The figures of `result["sextant"]` beside those of `result[other]`.
pub(super) fn table_against(result: &serde_json::Value, other: &str) -> String {
    fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, out);
                }
            }
            other => out.push((prefix.to_owned(), other.clone())),
        }
    }
    let mut rows = Vec::new();
    leaves("", &result["sextant"], &mut rows);
    let mut floor = Vec::new();
    leaves("", &result[other], &mut floor);
    let floor: BTreeMap<String, serde_json::Value> = floor.into_iter().collect();
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    let mut out = format!(
        "{:<44} {:>16} {:>16} {:>8}\n",
        "figure", "sextant", other, "ratio"
    );
    for (key, value) in &rows {
        let f = floor.get(key).cloned().unwrap_or(serde_json::Value::Null);
        let ratio = match (value.as_f64(), f.as_f64()) {
            (Some(a), Some(b)) if b != 0.0 && !value.is_boolean() => format!("{:.2}x", a / b),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{key:<44} {:>16} {:>16} {ratio:>8}\n",
            show(value),
            show(&f)
        ));
    }
    // Figures only the floor has (S6's reference).
    for (key, value) in &floor {
        if !rows.iter().any(|(k, _)| k == key) {
            out.push_str(&format!("{key:<44} {:>16} {:>16}\n", "-", show(value)));
        }
    }
    out
}
