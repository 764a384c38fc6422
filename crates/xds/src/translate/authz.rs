//! Authorization policies as Envoy's RBAC filters, on a workload's inbound
//! chains ([`crate::translate::capture::virtual_inbound`]).
//!
//! Each chain serves one port, so what a rule says of ports is decided here,
//! at translation: a rule for other ports is left out of that chain. The
//! rest of a rule (peer identity, namespace, address; host, method, path,
//! headers) is one RBAC principal, and a policy's rules are alternatives:
//! every DENY rule of the workload goes into one DENY filter and every ALLOW
//! rule into one ALLOW filter after it, each a single RBAC policy. (Envoy
//! keeps policies in a map that protobuf encodes in no fixed order; one
//! policy per filter keeps the bytes, and so the version, the same on every
//! replica.) With no ALLOW policy there is no ALLOW filter; with ALLOW
//! policies and no rule for the port, the filter refuses everything.
//!
//! TCP chains get the network RBAC filter. HTTP-only fields cannot be read
//! there; as in Istio, a DENY rule loses them (it then matches more) and an
//! ALLOW rule with them is left out (it then matches nothing).

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, RegexMatcher, StringMatcher, path_matcher, string_matcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use sextant_core::Rule;
use sextant_core::rules::authz::{AuthzMatch, Condition, Operation, Source};
use sextant_core::rules::{AuthzAction, authz_cidr};

use super::*;

const HTTP_RBAC: &str = "envoy.filters.http.rbac";
const HTTP_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const NETWORK_RBAC: &str = "envoy.filters.network.rbac";
const NETWORK_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

fn or(ids: Vec<Principal>) -> Principal {
    match <[Principal; 1]>::try_from(ids) {
        Ok([one]) => one,
        Err(ids) => Principal {
            identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
        },
    }
}

fn and(ids: Vec<Principal>) -> Principal {
    if ids.is_empty() {
        return any();
    }
    match <[Principal; 1]>::try_from(ids) {
        Ok([one]) => one,
        Err(ids) => Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
        },
    }
}

fn not(p: Principal) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::NotId(Box::new(p))),
    }
}

fn any() -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Any(true)),
    }
}

/// `x*`, `*x`, `*` or an exact value, as a string matcher (`prefix` goes
/// before the value: `spiffe://` for identities).
fn wildcard(value: &str, prefix: &str, ignore_case: bool) -> StringMatcher {
    let pattern = if value == "*" {
        string_matcher::MatchPattern::Prefix(prefix.to_owned())
    } else if let Some(p) = value.strip_suffix('*') {
        string_matcher::MatchPattern::Prefix(format!("{prefix}{p}"))
    } else if let Some(s) = value.strip_prefix('*') {
        string_matcher::MatchPattern::Suffix(s.to_owned())
    } else {
        string_matcher::MatchPattern::Exact(format!("{prefix}{value}"))
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    }
}

fn identity(matcher: StringMatcher) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(matcher),
            },
        )),
    }
}

fn principal_name(p: &str) -> Principal {
    identity(wildcard(p, "spiffe://", false))
}

fn namespace(ns: &str) -> Principal {
    if ns == "*" {
        return identity(wildcard("*", "spiffe://", false));
    }
    identity(StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: format!("^spiffe://[^/]+/ns/{}/sa/[^/]+$", regex_escape(ns)),
            ..Default::default()
        })),
        ignore_case: false,
    })
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

fn address(block: &str) -> Option<Principal> {
    let (ip, len) = authz_cidr(block)?;
    Some(Principal {
        identifier: Some(principal::Identifier::DirectRemoteIp(CidrRange {
            address_prefix: ip.to_string(),
            prefix_len: Some(UInt32Value { value: len }),
        })),
    })
}

fn header(name: &str, matcher: StringMatcher) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Header(HeaderMatcher {
            name: name.to_owned(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                matcher,
            )),
            ..Default::default()
        })),
    }
}

fn path(p: &str) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(wildcard(p, "", false))),
        })),
    }
}

/// `values` must match (any), `not_values` must not (none).
fn either(
    values: &[String],
    not_values: &[String],
    one: impl Fn(&str) -> Principal,
) -> Vec<Principal> {
    let mut out = Vec::new();
    if !values.is_empty() {
        out.push(or(values.iter().map(|v| one(v)).collect()));
    }
    if !not_values.is_empty() {
        out.push(not(or(not_values.iter().map(|v| one(v)).collect())));
    }
    out
}

fn source(s: &Source) -> Principal {
    let mut parts = either(&s.principals, &s.not_principals, principal_name);
    parts.extend(either(&s.namespaces, &s.not_namespaces, namespace));
    // A block that does not parse was refused by the rule's check.
    let ip = |b: &str| address(b).unwrap_or_else(|| not(any()));
    parts.extend(either(&s.ip_blocks, &s.not_ip_blocks, ip));
    and(parts)
}

fn operation(o: &Operation, http: bool) -> Principal {
    let mut parts = Vec::new();
    if http {
        parts.extend(either(&o.hosts, &o.not_hosts, |h| {
            header(":authority", wildcard(h, "", true))
        }));
        parts.extend(either(&o.methods, &o.not_methods, |m| {
            header(":method", wildcard(m, "", false))
        }));
        parts.extend(either(&o.paths, &o.not_paths, path));
    }
    and(parts)
}

fn ports_allow(values: &[String], not_values: &[String], port: u32) -> bool {
    let has = |v: &[String]| v.iter().any(|p| p.parse::<u32>().ok() == Some(port));
    (values.is_empty() || has(values)) && !has(not_values)
}

fn condition(c: &Condition, http: bool, port: u32) -> Option<Principal> {
    if let Some(name) = c.header() {
        if !http {
            return None;
        }
        let one = |v: &str| header(&name.to_ascii_lowercase(), wildcard(v, "", false));
        return Some(and(either(&c.values, &c.not_values, one)));
    }
    match c.key.as_str() {
        "source.namespace" => Some(and(either(&c.values, &c.not_values, namespace))),
        "source.principal" => Some(and(either(&c.values, &c.not_values, principal_name))),
        "source.ip" => Some(and(either(&c.values, &c.not_values, |b| {
            address(b).unwrap_or_else(|| not(any()))
        }))),
        "destination.port" => Some(if ports_allow(&c.values, &c.not_values, port) {
            any()
        } else {
            not(any())
        }),
        // Refused by the rule's check.
        _ => Some(not(any())),
    }
}

/// One rule as a principal for a chain on `port` (HTTP or not); `None`
/// when it cannot match there.
fn rule_principal(r: &AuthzMatch, action: AuthzAction, http: bool, port: u32) -> Option<Principal> {
    let mut parts = Vec::new();
    if !r.from.is_empty() {
        parts.push(or(r.from.iter().map(|f| source(&f.source)).collect()));
    }
    if !r.to.is_empty() {
        let ops: Vec<&Operation> =
            r.to.iter()
                .map(|t| &t.operation)
                .filter(|o| ports_allow(&o.ports, &o.not_ports, port))
                // TCP: an ALLOW operation that needs HTTP matches nothing.
                .filter(|o| http || action == AuthzAction::Deny || !o.http_only())
                .collect();
        if ops.is_empty() {
            return None;
        }
        parts.push(or(ops.into_iter().map(|o| operation(o, http)).collect()));
    }
    for c in &r.when {
        match condition(c, http, port) {
            Some(p) => parts.push(p),
            // A header condition on TCP: ALLOW matches nothing, DENY
            // matches without it.
            None if action == AuthzAction::Allow => return None,
            None => {}
        }
    }
    Some(and(parts))
}

/// The RBAC rules of `action` for a chain on `port`: `None` when no policy
/// of that action applies (no filter).
fn rbac(policies: &[Arc<Rule>], action: AuthzAction, http: bool, port: u32) -> Option<Rbac> {
    let of_action: Vec<&Arc<Rule>> = policies
        .iter()
        .filter(|r| r.as_authz().is_some_and(|a| a.action == action))
        .collect();
    if of_action.is_empty() {
        return None;
    }
    let principals: Vec<Principal> = of_action
        .iter()
        .filter_map(|r| r.as_authz())
        .flat_map(|a| a.rules.iter())
        .filter_map(|r| rule_principal(r, action, http, port))
        .collect();
    let name = match action {
        AuthzAction::Allow => "allow",
        AuthzAction::Deny => "deny",
    };
    let policies = if principals.is_empty() {
        std::collections::HashMap::new()
    } else {
        std::collections::HashMap::from([(
            name.to_owned(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals,
                ..Default::default()
            },
        )])
    };
    Some(Rbac {
        action: match action {
            AuthzAction::Allow => rbac::Action::Allow,
            AuthzAction::Deny => rbac::Action::Deny,
        } as i32,
        policies,
        ..Default::default()
    })
}

/// The HTTP RBAC filters (DENY, then ALLOW) of a chain on `port`, to go
/// before the router.
pub fn http_filters(policies: &[Arc<Rule>], port: u32) -> Vec<HttpFilter> {
    [AuthzAction::Deny, AuthzAction::Allow]
        .into_iter()
        .filter_map(|a| rbac(policies, a, true, port))
        .map(|rules| {
            let f = envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac {
                rules: Some(rules),
                ..Default::default()
            };
            HttpFilter {
                name: HTTP_RBAC.to_owned(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any_of(
                    HTTP_RBAC_TYPE,
                    &f,
                ))),
                ..Default::default()
            }
        })
        .collect()
}

/// The network RBAC filters (DENY, then ALLOW) of a TCP chain on `port`,
/// to go before the TCP proxy.
pub fn network_filters(policies: &[Arc<Rule>], port: u32) -> Vec<Filter> {
    [AuthzAction::Deny, AuthzAction::Allow]
        .into_iter()
        .filter_map(|a| rbac(policies, a, false, port))
        .map(|rules| {
            let f = envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac {
                rules: Some(rules),
                stat_prefix: format!("inbound_{port}."),
                ..Default::default()
            };
            Filter {
                name: NETWORK_RBAC.to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any_of(
                    NETWORK_RBAC_TYPE,
                    &f,
                ))),
            }
        })
        .collect()
}
