//! etcd keys and values to services: pure, no I/O.
//!
//! Key layout under the prefix (default `/sextant/`):
//! - `PREFIX services/HOSTNAME`: a service document (YAML or JSON, the
//!   registry-file fields; `hostname` may be omitted, it comes from the key;
//!   `endpoints` optional);
//! - `PREFIX endpoints/HOSTNAME/ID`: an endpoint document (the fields of an
//!   endpoint in the registry file), usually written with a lease.
//!
//! - `PREFIX routes/NAMESPACE/NAME`: a route rule (YAML or JSON, the fields
//!   of a `routes:` entry of the registry file; `name` and `namespace` may
//!   be omitted, they come from the key);
//! - `PREFIX policies/NAMESPACE/NAME`: a destination policy, likewise;
//! - `PREFIX scopes/NAMESPACE/NAME`: a scope rule (a `scopes:` entry), likewise.
//! - `PREFIX serviceentries/NAMESPACE/NAME` and `PREFIX
//!   workloadentries/NAMESPACE/NAME`: Istio's ServiceEntry and
//!   WorkloadEntry (a `serviceEntries:` or `workloadEntries:` item of the
//!   registry file; `name` and `namespace` from the key), which become
//!   services as in every registry (`sextant_core::entries`); a service
//!   document of the same hostname wins over an entry's host.
//! - `PREFIX workloadgroups/NAMESPACE/NAME`: Istio's WorkloadGroup (a
//!   `workloadGroups:` item), the template VMs register from; the entries
//!   registered are written under `workloadentries/` with a lease
//!   (`crate::groups`).
//!
//! Under the naming prefix, if configured, grpc-go's etcd naming convention
//! (`go.etcd.io/etcd/client/v3/naming/endpoints`): key `SERVICE/ADDR`, value
//! `{"Addr":"HOST:PORT","Metadata":...}`. Such endpoints join the service
//! document of hostname `SERVICE` on its first port; without a document, the
//! service gets one `grpc` port (GRPC) numbered after its lowest endpoint port.

use std::collections::BTreeMap;

use serde::Deserialize;
use sextant_core::entries::{ServiceEntry, WorkloadEntry, services_from_entries};
use sextant_core::groups::WorkloadGroup;
use sextant_core::{
    Address, Endpoint, Hostname, Labels, PolicyEntry, Protocol, RouteEntry, Rule, RuleKey,
    RuleKind, ScopeEntry, Service, ServicePort,
};

/// What a key names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// `services/HOSTNAME`.
    Service(Hostname),
    /// `endpoints/HOSTNAME/ID`.
    Endpoint(Hostname, String),
    /// Naming convention `SERVICE/ADDR`.
    Naming(Hostname, String),
}

impl Key {
    /// The hostname the key contributes to.
    pub fn hostname(&self) -> &Hostname {
        match self {
            Key::Service(h) | Key::Endpoint(h, _) | Key::Naming(h, _) => h,
        }
    }
}

/// Where keys live.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Prefix of service and endpoint documents, e.g. `/sextant/`.
    pub prefix: String,
    /// Prefix of grpc-go naming-convention keys, if read.
    pub naming_prefix: Option<String>,
}

impl Layout {
    /// What `key` names; `Err` for a key under a prefix that does not fit
    /// the layout (reported, then skipped); `Ok(None)` for a key outside it.
    pub fn classify(&self, key: &str) -> Result<Option<Key>, String> {
        if let Some(rest) = key.strip_prefix(self.prefix.as_str()) {
            if let Some(host) = rest.strip_prefix("services/") {
                return match host {
                    "" => Err("service key without a hostname".into()),
                    h if h.contains('/') => {
                        Err(format!("service key {h:?} has a '/' after the hostname"))
                    }
                    h => Ok(Some(Key::Service(Hostname::new(h)))),
                };
            }
            if let Some(rest) = rest.strip_prefix("endpoints/") {
                return match rest.split_once('/') {
                    Some((h, id)) if !h.is_empty() && !id.is_empty() => {
                        Ok(Some(Key::Endpoint(Hostname::new(h), id.to_owned())))
                    }
                    _ => Err("endpoint key must be endpoints/HOSTNAME/ID".into()),
                };
            }
            // Other keys under the prefix are not ours to judge.
            return Ok(None);
        }
        if let Some(naming) = &self.naming_prefix
            && let Some(rest) = key.strip_prefix(naming.as_str())
        {
            return match rest.rsplit_once('/') {
                Some((svc, addr)) if !svc.is_empty() && !addr.is_empty() => {
                    Ok(Some(Key::Naming(Hostname::new(svc), addr.to_owned())))
                }
                _ => Err("naming key must be SERVICE/ADDR".into()),
            };
        }
        Ok(None)
    }
}

impl Layout {
    /// The rule a key names, `routes/NAMESPACE/NAME`,
    /// `policies/NAMESPACE/NAME`, `scopes/NAMESPACE/NAME`, `peerauthentications/NAMESPACE/NAME`,
    /// `authorizationpolicies/NAMESPACE/NAME`, `gateways/NAMESPACE/NAME` or `credentials/NAMESPACE/NAME` under the prefix; `Err` for a rule key that
    /// does not fit; `Ok(None)` for any other key.
    pub fn classify_rule(&self, key: &str) -> Result<Option<RuleKey>, String> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return Ok(None);
        };
        let (kind, dir, rest) = if let Some(r) = rest.strip_prefix("routes/") {
            (RuleKind::Route, "routes", r)
        } else if let Some(r) = rest.strip_prefix("policies/") {
            (RuleKind::Policy, "policies", r)
        } else if let Some(r) = rest.strip_prefix("scopes/") {
            (RuleKind::Scope, "scopes", r)
        } else if let Some(r) = rest.strip_prefix("peerauthentications/") {
            (RuleKind::PeerAuth, "peerauthentications", r)
        } else if let Some(r) = rest.strip_prefix("authorizationpolicies/") {
            (RuleKind::Authz, "authorizationpolicies", r)
        } else if let Some(r) = rest.strip_prefix("gateways/") {
            (RuleKind::Gateway, "gateways", r)
        } else if let Some(r) = rest.strip_prefix("credentials/") {
            (RuleKind::Credential, "credentials", r)
        } else {
            return Ok(None);
        };
        match rest.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Some(RuleKey::new(kind, ns, name)))
            }
            _ => Err(format!("a {kind} key must be {dir}/NAMESPACE/NAME")),
        }
    }
}

/// What an entry key names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKey {
    /// `serviceentries/NAMESPACE/NAME`.
    Service(String, String),
    /// `workloadentries/NAMESPACE/NAME`.
    Workload(String, String),
    /// `workloadgroups/NAMESPACE/NAME`.
    Group(String, String),
}

impl EntryKey {
    /// The object as problems name it (`ServiceEntry NS/NAME`).
    pub fn object(&self) -> String {
        match self {
            EntryKey::Service(ns, name) => ServiceEntry::object_of(ns, name),
            EntryKey::Workload(ns, name) => WorkloadEntry::object_of(ns, name),
            EntryKey::Group(ns, name) => format!("WorkloadGroup {ns}/{name}"),
        }
    }
}

impl Layout {
    /// The etcd key of an entry: what [`Layout::classify_entry`] reads back.
    pub fn entry_key(&self, k: &EntryKey) -> String {
        let prefix = &self.prefix;
        match k {
            EntryKey::Service(ns, name) => format!("{prefix}serviceentries/{ns}/{name}"),
            EntryKey::Workload(ns, name) => format!("{prefix}workloadentries/{ns}/{name}"),
            EntryKey::Group(ns, name) => format!("{prefix}workloadgroups/{ns}/{name}"),
        }
    }

    /// The entry a key names; `Err` for an entry key that does not fit;
    /// `Ok(None)` for any other key.
    pub fn classify_entry(&self, key: &str) -> Result<Option<EntryKey>, String> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return Ok(None);
        };
        type Make = fn(String, String) -> EntryKey;
        let kinds: [(&str, Make); 3] = [
            ("serviceentries", EntryKey::Service),
            ("workloadentries", EntryKey::Workload),
            ("workloadgroups", EntryKey::Group),
        ];
        let Some((dir, make, rest)) = kinds.iter().find_map(|(dir, make)| {
            rest.strip_prefix(dir)
                .and_then(|r| r.strip_prefix('/'))
                .map(|r| (*dir, *make, r))
        }) else {
            return Ok(None);
        };
        match rest.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Some(make(ns.to_owned(), name.to_owned())))
            }
            _ => Err(format!("an entry key must be {dir}/NAMESPACE/NAME")),
        }
    }
}

/// A parsed entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// A ServiceEntry.
    Service(ServiceEntry),
    /// A WorkloadEntry.
    Workload(WorkloadEntry),
    /// A WorkloadGroup.
    Group(WorkloadGroup),
}

/// Parses the value of an entry key; `name` and `namespace` come from the
/// key when absent and must agree with it when present.
pub fn parse_entry(key: &EntryKey, value: &[u8]) -> Result<Entry, String> {
    let (ns, name) = match key {
        EntryKey::Service(ns, name) | EntryKey::Workload(ns, name) | EntryKey::Group(ns, name) => {
            (ns, name)
        }
    };
    let doc = named_document(value, "an entry", name, ns)?;
    match key {
        EntryKey::Service(..) => serde_yaml_ng::from_value(doc).map(Entry::Service),
        EntryKey::Workload(..) => serde_yaml_ng::from_value(doc).map(Entry::Workload),
        EntryKey::Group(..) => {
            let group: WorkloadGroup = serde_yaml_ng::from_value(doc).map_err(|e| e.to_string())?;
            group.check()?;
            return Ok(Entry::Group(group));
        }
    }
    .map_err(|e| e.to_string())
}

/// A value as a YAML or JSON mapping (`what`, `a route`, names it in
/// errors) whose `name` and `namespace` come from its key when absent and
/// must agree with it when present.
fn named_document(
    value: &[u8],
    what: &str,
    name: &str,
    namespace: &str,
) -> Result<serde_yaml_ng::Value, String> {
    let text = std::str::from_utf8(value).map_err(|_| "value is not UTF-8".to_owned())?;
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("not a YAML or JSON document: {e}"))?;
    let map = doc
        .as_mapping_mut()
        .ok_or_else(|| format!("{what} document must be a mapping"))?;
    for (field, want) in [("name", name), ("namespace", namespace)] {
        let f = serde_yaml_ng::Value::from(field);
        match map.get(&f) {
            None => {
                map.insert(f, serde_yaml_ng::Value::from(want));
            }
            Some(v) if v.as_str() == Some(want) => {}
            Some(v) => return Err(format!("{field} {v:?} differs from the key's {want:?}")),
        }
    }
    Ok(doc)
}

/// Parses the value of a rule key: the document's `name` and `namespace`
/// come from the key when absent and must agree with it when present.
pub fn parse_rule(key: &RuleKey, value: &[u8]) -> Result<Rule, String> {
    let doc = named_document(value, &format!("a {}", key.kind), &key.name, &key.namespace)?;
    let rule = match key.kind {
        RuleKind::Route => serde_yaml_ng::from_value::<RouteEntry>(doc).map(Rule::from),
        RuleKind::Policy => serde_yaml_ng::from_value::<PolicyEntry>(doc).map(Rule::from),
        RuleKind::Scope => serde_yaml_ng::from_value::<ScopeEntry>(doc).map(Rule::from),
        RuleKind::PeerAuth => {
            serde_yaml_ng::from_value::<sextant_core::rules::PeerAuthEntry>(doc).map(Rule::from)
        }
        RuleKind::Authz => {
            serde_yaml_ng::from_value::<sextant_core::rules::AuthzEntry>(doc).map(Rule::from)
        }
        RuleKind::Gateway => {
            serde_yaml_ng::from_value::<sextant_core::rules::GatewayEntry>(doc).map(Rule::from)
        }
        RuleKind::Credential => {
            serde_yaml_ng::from_value::<sextant_core::rules::gateway::CredentialEntry>(doc)
                .map(Rule::from)
        }
    };
    rule.map_err(|e| e.to_string())
}

/// A parsed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A service document.
    Service(Service),
    /// An endpoint document.
    Endpoint(Endpoint),
    /// A naming-convention endpoint: address, port, labels from metadata.
    Naming(Address, u32, Labels),
}

#[derive(Deserialize)]
struct NamingValue {
    #[serde(rename = "Addr")]
    addr: String,
    #[serde(rename = "Metadata", default)]
    metadata: serde_json::Value,
}

/// Parses the value of `key`. Errors say what is wrong, without the key.
pub fn parse(key: &Key, value: &[u8]) -> Result<Object, String> {
    let text = std::str::from_utf8(value).map_err(|_| "value is not UTF-8".to_owned())?;
    match key {
        Key::Service(host) => {
            let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
                .map_err(|e| format!("not a YAML or JSON document: {e}"))?;
            let map = doc
                .as_mapping_mut()
                .ok_or("a service document must be a mapping")?;
            let field = serde_yaml_ng::Value::from("hostname");
            match map.get(&field) {
                None => {
                    map.insert(field, serde_yaml_ng::Value::from(host.as_str()));
                }
                Some(v) if v.as_str() == Some(host.as_str()) => {}
                Some(v) => {
                    return Err(format!(
                        "hostname {v:?} differs from the key's {:?}",
                        host.as_str()
                    ));
                }
            }
            let service: Service = serde_yaml_ng::from_value(doc).map_err(|e| e.to_string())?;
            service.validate().map_err(|e| e.to_string())?;
            Ok(Object::Service(service))
        }
        Key::Endpoint(..) => {
            let ep: Endpoint = serde_yaml_ng::from_str(text)
                .map_err(|e| format!("not an endpoint document: {e}"))?;
            if ep.weight == 0 {
                return Err("weight must be at least 1".into());
            }
            Ok(Object::Endpoint(ep))
        }
        Key::Naming(..) => {
            let v: NamingValue =
                serde_json::from_str(text).map_err(|e| format!("not a naming endpoint: {e}"))?;
            let (host, port) = v
                .addr
                .rsplit_once(':')
                .ok_or_else(|| format!("Addr {:?} has no port", v.addr))?;
            let port: u32 = port
                .parse()
                .map_err(|_| format!("Addr {:?} has a bad port", v.addr))?;
            let address: Address = host.trim_matches(['[', ']']).parse()?;
            let labels = match v.metadata {
                serde_json::Value::Object(m) => m
                    .into_iter()
                    .filter_map(|(k, v)| match v {
                        serde_json::Value::String(s) => Some((k, s)),
                        serde_json::Value::Number(n) => Some((k, n.to_string())),
                        serde_json::Value::Bool(b) => Some((k, b.to_string())),
                        _ => None,
                    })
                    .collect(),
                _ => Labels::new(),
            };
            Ok(Object::Naming(address, port, labels))
        }
    }
}

/// Every valid object, by key; builds whole services.
#[derive(Clone, Debug, Default)]
pub struct State {
    objects: BTreeMap<Key, Object>,
    entries: BTreeMap<EntryKey, Entry>,
    /// What the entries declare, converted again at each entry change.
    from_entries: BTreeMap<Hostname, Service>,
    /// The entries' problems by object (`ServiceEntry NS/NAME`).
    entry_problems: BTreeMap<String, String>,
}

impl State {
    /// Sets the object of a key.
    pub fn put(&mut self, key: Key, object: Object) {
        self.objects.insert(key, object);
    }

    /// Removes a key.
    pub fn delete(&mut self, key: &Key) {
        self.objects.remove(key);
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.objects.len() + self.entries.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.entries.is_empty()
    }

    /// Sets (`Some`) or removes an entry without converting the entries
    /// again: a batch of them is converted once, by
    /// [`State::reconvert`].
    pub fn store_entry(&mut self, key: EntryKey, entry: Option<Entry>) {
        match entry {
            Some(e) => self.entries.insert(key, e),
            None => self.entries.remove(&key),
        };
    }

    /// Converts every entry again; returns the hostnames whose
    /// entry-declared service changed.
    pub fn reconvert(&mut self) -> Vec<Hostname> {
        let mut entries = Vec::new();
        let mut workloads = Vec::new();
        for e in self.entries.values() {
            match e {
                Entry::Service(s) => entries.push(s.clone()),
                Entry::Workload(w) => workloads.push(w.clone()),
                Entry::Group(_) => {}
            }
        }
        let converted = services_from_entries(&entries, &workloads).validated();
        let problems = converted.problems;
        let now: BTreeMap<Hostname, Service> = converted
            .services
            .into_iter()
            .map(|s| (s.hostname.clone(), s))
            .collect();
        let before = std::mem::replace(&mut self.from_entries, now);
        self.entry_problems = problems;
        let mut touched: Vec<Hostname> = before
            .iter()
            .filter(|(h, s)| self.from_entries.get(*h) != Some(*s))
            .map(|(h, _)| h.clone())
            .collect();
        touched.extend(
            self.from_entries
                .keys()
                .filter(|h| !before.contains_key(*h))
                .cloned(),
        );
        touched
    }

    /// The WorkloadGroups held.
    pub fn groups(&self) -> Vec<WorkloadGroup> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Entry::Group(g) => Some(g.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every entry key held.
    pub fn entry_keys(&self) -> Vec<EntryKey> {
        self.entries.keys().cloned().collect()
    }

    /// The entries' problems by entry key (what is not served of each).
    pub fn entry_problems(&self) -> Vec<(EntryKey, String)> {
        self.entries
            .keys()
            .filter_map(|k| {
                self.entry_problems
                    .get(&k.object())
                    .map(|p| (k.clone(), p.clone()))
            })
            .collect()
    }

    /// The whole service for `host`, or `None` when it has no document and
    /// no naming-convention endpoints (endpoint documents alone do not make
    /// a service: they wait for theirs).
    pub fn service(&self, host: &Hostname) -> Option<Service> {
        let doc = match self.objects.get(&Key::Service(host.clone())) {
            Some(Object::Service(s)) => Some(s.clone()),
            _ => None,
        };
        // Keys order by variant, then hostname, then id: each hostname's
        // endpoint and naming keys are one contiguous run.
        let run = |first: Key| {
            self.objects
                .range(first..)
                .take_while(move |(k, _)| k.hostname() == host)
                .map(|(_, o)| o)
        };
        let endpoints: Vec<Endpoint> = run(Key::Endpoint(host.clone(), String::new()))
            .filter_map(|o| match o {
                Object::Endpoint(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        let naming: Vec<(Address, u32, Labels)> = run(Key::Naming(host.clone(), String::new()))
            .filter_map(|o| match o {
                Object::Naming(a, p, l) => Some((a.clone(), *p, l.clone())),
                _ => None,
            })
            .collect();
        let mut service = match doc {
            Some(s) => s,
            None if !naming.is_empty() => {
                let port = naming.iter().map(|(_, p, _)| *p).min().unwrap_or(80);
                Service::new(host.clone()).with_port("grpc", port, Protocol::Grpc)
            }
            None => return self.from_entries.get(host).cloned(),
        };
        service.endpoints.extend(endpoints);
        if let Some(first) = service.ports.first().cloned() {
            for (address, port, labels) in naming {
                let mut ep = Endpoint::new(address).with_port(&first.name, port);
                ep.labels = labels;
                service.endpoints.push(ep);
            }
        }
        Some(service)
    }

    /// Every service.
    pub fn services(&self) -> Vec<Service> {
        let mut hosts: Vec<&Hostname> = self
            .objects
            .keys()
            .map(Key::hostname)
            .chain(self.from_entries.keys())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts.into_iter().filter_map(|h| self.service(h)).collect()
    }
}

/// A service port from `name=port`, its protocol from the name.
pub fn port_arg(arg: &str) -> Result<ServicePort, String> {
    let (name, port) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} should be NAME=PORT, e.g. http=8080"))?;
    let port: u32 = port
        .parse()
        .map_err(|_| format!("{arg:?}: {port:?} is not a port number"))?;
    Ok(ServicePort::new(name, port))
}

#[cfg(test)]
mod tests;
