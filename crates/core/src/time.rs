//! How times are written on every debug endpoint and in every status:
//! RFC 3339 in UTC with milliseconds (`2026-12-07T06:51:23.123Z`), one
//! format under one name, as serde `serialize_with` helpers.

use std::time::SystemTime;

use serde::Serializer;

/// A time as RFC 3339, UTC, milliseconds.
pub fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `#[serde(serialize_with = "sextant_core::time::rfc3339")]`.
pub fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// As [`rfc3339`], for an optional time (`null` when absent).
pub fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    #[test]
    fn utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_626_283_123);
        assert_eq!(super::format(t), "2026-12-07T06:51:23.123Z");
    }
}
