//! Validation of services: rejects, with a precise message, what Envoy or a
//! gRPC client would reject later (as a NACK, far from the cause).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::model::{Address, Hostname, Locality, Resolution, Service};

/// One problem found in a service: which service, which endpoint, which field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ValidationError {
    /// The service's hostname as given (possibly the invalid value itself).
    pub service: Hostname,
    /// `endpoints[I] (ADDRESS)` when the problem is in an endpoint.
    pub endpoint: Option<String>,
    /// The field, e.g. `ports[1].port` or `weight`.
    pub field: String,
    /// What is wrong, lowercase.
    pub problem: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {:?}", self.service.as_str())?;
        if let Some(ep) = &self.endpoint {
            write!(f, ", {ep}")?;
        }
        write!(f, ", field {}: {}", self.field, self.problem)
    }
}

/// Every problem found in one service (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_joined(f, &self.0)
    }
}

/// Writes `items` separated by `; ` (a list of problems on one line).
pub(crate) fn write_joined<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            f.write_str("; ")?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

/// What is wrong with `name` as a DNS name, or `None` when it is fine.
///
/// Lowercase letters, digits and `-`; labels of 1 to 63 characters that do
/// not start or end with `-`; at most 253 characters; no trailing dot.
/// Uppercase is refused because Envoy matches hosts case-insensitively and
/// two names differing only in case would collide in one route table.
pub fn dns_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 253 {
        return Some(format!(
            "is {} characters long, at most 253 allowed",
            name.len()
        ));
    }
    for label in name.split('.') {
        if let Some(p) = label_problem(label) {
            return Some(p);
        }
    }
    None
}

fn label_problem(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("has an empty label (two dots in a row, or a leading or trailing dot)".into());
    }
    if label.len() > 63 {
        return Some(format!("label {label:?} is longer than 63 characters"));
    }
    if let Some(c) = label.chars().find(|c| c.is_ascii_uppercase()) {
        return Some(format!("must be lowercase (found {c:?})"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "contains {c:?}; only letters, digits, '-' and '.' are allowed"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some(format!("label {label:?} starts or ends with '-'"));
    }
    None
}

fn port_number_problem(port: u32) -> Option<String> {
    match port {
        0 => Some("port 0 is not a usable port".into()),
        1..=65535 => None,
        _ => Some(format!("{port} is out of range 1-65535")),
    }
}

impl Service {
    /// Checks the service and returns every problem at once.
    ///
    /// Rules: the hostname and namespace are DNS names (namespace: one label);
    /// at least one port; port names are non-empty DNS labels and unique; port
    /// numbers are 1-65535 and unique (each becomes a cluster name); endpoint
    /// target ports name existing service ports and are 1-65535; endpoint
    /// weights are at least 1; the weights in one locality, and the locality
    /// weights together, fit in a `u32` (Envoy's limit); an endpoint IP is not
    /// the unspecified address.
    ///
    /// ```
    /// use sextant_core::{Endpoint, Protocol, Service};
    /// let svc = Service::new("reviews.default.svc")
    ///     .with_port("http", 9080, Protocol::Http)
    ///     .with_endpoint(Endpoint::new("10.0.0.1".parse().unwrap()));
    /// assert!(svc.validate().is_ok());
    /// let bad = Service::new("Reviews").with_port("http", 0, Protocol::Http);
    /// assert_eq!(bad.validate().unwrap_err().0.len(), 2);
    /// ```
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        /// The most identities of each kind a service names.
        const MAX_IDENTITIES: usize = 64;
        let mut errors = Vec::new();
        let mut push = |endpoint: Option<String>, field: String, problem: String| {
            errors.push(ValidationError {
                service: self.hostname.clone(),
                endpoint,
                field,
                problem,
            })
        };

        if let Some(p) = dns_name_problem(&self.hostname) {
            push(None, "hostname".into(), p);
        }
        if self.namespace.contains('.') {
            push(
                None,
                "namespace".into(),
                "must be a single DNS label (no '.')".into(),
            );
        } else if let Some(p) = dns_name_problem(&self.namespace) {
            push(None, "namespace".into(), p);
        }
        if self.ports.is_empty() {
            push(None, "ports".into(), "at least one port is required".into());
        }
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            if port.name.is_empty() {
                push(None, format!("ports[{i}].name"), "must not be empty".into());
            } else if let Some(p) = label_problem(&port.name) {
                push(None, format!("ports[{i}].name"), p);
            } else if !names.insert(port.name.as_str()) {
                push(
                    None,
                    format!("ports[{i}].name"),
                    format!("duplicate port name {:?}", port.name),
                );
            }
            if let Some(p) = port_number_problem(port.port) {
                push(None, format!("ports[{i}].port"), p);
            } else if !numbers.insert(port.port) {
                push(
                    None,
                    format!("ports[{i}].port"),
                    format!("duplicate port number {}", port.port),
                );
            }
        }
        for i in 0..self.export_to.len() {
            if let Some(p) = crate::export::entry_problem(&self.export_to, i) {
                push(None, format!("exportTo[{i}]"), p);
            }
        }
        let ids = &self.identities;
        for (field, n) in [
            ("identities.subjectAltNames", ids.subject_alt_names.len()),
            ("identities.serviceAccounts", ids.service_accounts.len()),
        ] {
            if n > MAX_IDENTITIES {
                push(
                    None,
                    field.into(),
                    format!("{n} entries, at most {MAX_IDENTITIES}"),
                );
            }
        }
        for (i, san) in ids.subject_alt_names.iter().enumerate() {
            if san.is_empty() || san.len() > 1024 || san.chars().any(|c| c.is_control() || c == ' ')
            {
                push(
                    None,
                    format!("identities.subjectAltNames[{i}]"),
                    "must be a URI or DNS name (1 to 1024 characters, no spaces)".into(),
                );
            }
        }
        for (i, sa) in ids.service_accounts.iter().enumerate() {
            if let Some(p) = dns_name_problem(sa) {
                push(None, format!("identities.serviceAccounts[{i}]"), p);
            }
        }
        for (i, label) in self.labels.keys().enumerate() {
            if label.is_empty() {
                push(
                    None,
                    format!("labels[{i}]"),
                    "label key must not be empty".into(),
                );
            }
        }

        let mut locality_weights: BTreeMap<&Locality, u64> = BTreeMap::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            // Named only when something is wrong: formatting every
            // endpoint's address was a visible cost of large updates.
            let who = || Some(format!("endpoints[{i}] ({})", ep.address));
            if let Address::Ip(ip) = &ep.address
                && ip.is_unspecified()
            {
                push(
                    who(),
                    "address".into(),
                    format!("{ip} is the unspecified address and cannot receive traffic"),
                );
            }
            for (name, &port) in &ep.ports {
                if self.port(name).is_none() {
                    push(
                        who(),
                        format!("ports.{name}"),
                        format!("{name:?} does not name a port of this service"),
                    );
                }
                if let Some(p) = port_number_problem(port) {
                    push(who(), format!("ports.{name}"), p);
                }
            }
            if ep.weight == 0 {
                push(who(), "weight".into(), "must be at least 1".into());
            }
            for (field, value) in [
                ("locality.region", &ep.locality.region),
                ("locality.zone", &ep.locality.zone),
                ("locality.subzone", &ep.locality.subzone),
            ] {
                if value.chars().any(char::is_control) {
                    push(who(), field.into(), "contains a control character".into());
                }
            }
            *locality_weights.entry(&ep.locality).or_default() += u64::from(ep.weight);
            if self.resolution == Some(Resolution::Static) && ep.address.ip().is_none() {
                push(
                    who(),
                    "address".into(),
                    "resolution STATIC takes IP addresses (DNS resolves names)".into(),
                );
            }
        }
        match self.resolution {
            Some(Resolution::None) if !self.endpoints.is_empty() => push(
                None,
                "endpoints".into(),
                "resolution NONE sends connections to their original destination and takes no endpoints"
                    .into(),
            ),
            Some(Resolution::DnsRoundRobin) if self.endpoints.len() != 1 => push(
                None,
                "endpoints".into(),
                format!(
                    "resolution DNS_ROUND_ROBIN takes exactly one endpoint (the name the proxy resolves), not {}",
                    self.endpoints.len()
                ),
            ),
            _ => {}
        }
        let mut total: u64 = 0;
        for (locality, sum) in &locality_weights {
            if *sum > u64::from(u32::MAX) {
                push(
                    None,
                    "endpoints[].weight".into(),
                    format!(
                        "weights in locality {}/{}/{} add up to {sum}, more than {} (Envoy's limit)",
                        locality.region,
                        locality.zone,
                        locality.subzone,
                        u32::MAX
                    ),
                );
            }
            total += sum;
        }
        if total > u64::from(u32::MAX) && locality_weights.len() > 1 {
            push(
                None,
                "endpoints[].weight".into(),
                format!(
                    "locality weights add up to {total}, more than {} (Envoy's limit)",
                    u32::MAX
                ),
            );
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests;
