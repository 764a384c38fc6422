//! Values shared by route rules and destination policies, written as Istio
//! writes them: durations as `"1.5s"`, percentages as `{value: 10}` (or a
//! bare number), string matches as `{exact: ...}`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A duration written as Istio and protobuf JSON write them: a decimal
/// number and a unit, `h`, `m`, `s`, `ms` or `us` (`"1.5s"`, `"250ms"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// `n` milliseconds.
    pub fn from_millis(n: u64) -> Self {
        Duration(std::time::Duration::from_millis(n))
    }
}

/// The longest duration a rule may carry (a day): longer values are typos,
/// and every proxy would carry them.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(86_400);

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} has no unit (h, m, s, ms or us)"))?;
        let (number, unit) = s.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("duration {s:?} does not start with a number"))?;
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            _ => {
                return Err(format!(
                    "duration {s:?} has unit {unit:?}; use h, m, s, ms or us"
                ));
            }
        };
        let secs = value * scale;
        if !secs.is_finite() || secs > MAX_DURATION.as_secs_f64() {
            return Err(format!("duration {s:?} is longer than a day"));
        }
        Ok(Duration(std::time::Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}us", d.as_micros())
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A percentage, 0 to 100, with decimals (`0.1` is one request in a
/// thousand). Written `{value: 10}` as Istio does, or as a bare number.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percent(pub f64);

impl PartialEq for Percent {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Percent {}

impl std::hash::Hash for Percent {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Value {
            value: f64,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Doc {
            Bare(f64),
            Istio(Value),
        }
        match Doc::deserialize(d) {
            Ok(Doc::Bare(v)) | Ok(Doc::Istio(Value { value: v })) => Ok(Percent(v)),
            Err(_) => Err(serde::de::Error::custom(
                "a percentage is a number from 0 to 100, or {value: NUMBER}",
            )),
        }
    }
}

/// How a string (a path, a header value, a method) is matched.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Matches the whole value, RE2 syntax.
    Regex(String),
}

impl<'de> Deserialize<'de> for StringMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match HeaderCondition::deserialize(d)?.0 {
            Some(m) => Ok(m),
            None => Err(serde::de::Error::custom(
                "a string match needs one of exact, prefix and regex",
            )),
        }
    }
}

/// A header's condition in a match: a [`StringMatch`], or written `{}`,
/// only that the header is there (in `withoutHeaders`: that it is not).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct HeaderCondition(pub Option<StringMatch>);

impl<'de> Deserialize<'de> for HeaderCondition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Doc {
            exact: Option<String>,
            prefix: Option<String>,
            regex: Option<String>,
        }
        let doc = Doc::deserialize(d)?;
        let mut found = Vec::new();
        if let Some(v) = doc.exact {
            found.push(StringMatch::Exact(v));
        }
        if let Some(v) = doc.prefix {
            found.push(StringMatch::Prefix(v));
        }
        if let Some(v) = doc.regex {
            found.push(StringMatch::Regex(v));
        }
        match found.len() {
            0 | 1 => Ok(HeaderCondition(found.pop())),
            _ => Err(serde::de::Error::custom(
                "a string match has one of exact, prefix and regex, not several",
            )),
        }
    }
}

/// Relative shares as whole percentages summing to 100, by the largest
/// remainder (1:2 is 33/67): what platforms with relative or fractional
/// weights (Gateway API, Consul) become in a route. All zero stays zero.
/// Any share, up to `u64::MAX` each, is handled exactly (the arithmetic is
/// 128-bit: a fuzzed Consul splitter with a weight of 10^47 overflowed it).
pub fn percentages(shares: &[u64]) -> Vec<u32> {
    let total: u128 = shares.iter().map(|&s| u128::from(s)).sum();
    if total == 0 {
        return vec![0; shares.len()];
    }
    let mut out: Vec<(u128, u128)> = shares
        .iter()
        .map(|&s| {
            let s = u128::from(s) * 100;
            (s / total, s % total)
        })
        .collect();
    let mut left = 100u128.saturating_sub(out.iter().map(|s| s.0).sum::<u128>());
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by(|&a, &b| out[b].1.cmp(&out[a].1).then(a.cmp(&b)));
    for i in order {
        if left == 0 {
            break;
        }
        if shares[i] > 0 {
            out[i].0 += 1;
            left -= 1;
        }
    }
    out.iter()
        .map(|s| u32::try_from(s.0).unwrap_or(100))
        .collect()
}

/// A port by number, written `{number: 9080}` as Istio does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    /// The service port.
    pub number: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_sum_to_a_hundred_whatever_the_shares() {
        assert_eq!(percentages(&[1, 2]), [33, 67]);
        assert_eq!(percentages(&[0, 0]), [0, 0]);
        // Found by fuzzing (a Consul splitter weight of 10^47): no overflow.
        assert_eq!(percentages(&[4500, u64::MAX]), [0, 100]);
        assert_eq!(percentages(&[u64::MAX, u64::MAX]), [50, 50]);
        let many = vec![u64::MAX; 7];
        assert_eq!(percentages(&many).iter().sum::<u32>(), 100);
    }

    #[test]
    fn durations_parse_as_istio_writes_them() {
        for (text, ms) in [
            ("1s", 1000),
            ("1.5s", 1500),
            ("250ms", 250),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("0.001s", 1),
        ] {
            let d: Duration = text.parse().expect(text);
            assert_eq!(d.0.as_millis(), ms, "{text}");
        }
        for bad in ["", "1", "s", "-1s", "1d", "1 s x", "25h"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::from_millis(2000).to_string(), "2s");
    }

    #[test]
    fn percentages_are_bare_or_istio_shaped() {
        let p: Percent = serde_yaml_ng::from_str("{value: 12.5}").expect("istio");
        assert_eq!(p, Percent(12.5));
        let p: Percent = serde_yaml_ng::from_str("10").expect("bare");
        assert_eq!(p, Percent(10.0));
        assert!(serde_yaml_ng::from_str::<Percent>("{valu: 1}").is_err());
    }

    #[test]
    fn header_conditions() {
        let c: HeaderCondition = serde_yaml_ng::from_str("{}").expect("present");
        assert_eq!(c, HeaderCondition(None));
        let c: HeaderCondition = serde_yaml_ng::from_str("{prefix: a}").expect("prefix");
        assert_eq!(c, HeaderCondition(Some(StringMatch::Prefix("a".into()))));
        assert!(serde_yaml_ng::from_str::<HeaderCondition>("{exact: a, prefix: b}").is_err());
        assert!(serde_yaml_ng::from_str::<HeaderCondition>("{exakt: a}").is_err());
    }
}
