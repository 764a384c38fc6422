//! What is injected, as one document: the template. `sextant inject`,
//! `sextant webhook` and the audit read the same file (`--template FILE`;
//! in a cluster, a ConfigMap mounted into both), and its hash, recorded on
//! every injected pod, tells a pod injected from an older template.
//!
//! ```yaml
//! image: sextant/proxy:0.1.0          # sextant and Envoy
//! xdsAddress: sextant.sextant.svc:15010
//! nativeSidecars: auto                 # auto | always | never
//! resources: { requests: { cpu: 100m, memory: 128Mi }, limits: { memory: 1Gi } }
//! ```
//!
//! Every field has a default; unknown fields are errors.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The injection template. Field names are the YAML's (camelCase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Template {
    /// The proxy image: `sextant` and Envoy (`deploy/Dockerfile.proxy`).
    pub image: String,
    /// Its pull policy.
    pub image_pull_policy: String,
    /// Where the proxy connects for xDS, `HOST:PORT`.
    pub xds_address: String,
    /// A ConfigMap in the pod's namespace holding the CA of Sextant's TLS
    /// port under `root-cert.pem` (Istio's `istio-ca-root-cert`): set, the
    /// proxy connects over TLS and trusts it.
    pub xds_ca_config_map: Option<String>,
    /// A projected service-account token with this audience is mounted
    /// and sent with the xDS stream (for `--xds-auth token`).
    pub token_audience: Option<String>,
    /// Envoy's log level.
    pub proxy_log_level: String,
    /// Envoy's worker threads.
    pub concurrency: u32,
    /// The agent's drain deadline (the pod's grace period should exceed it).
    pub drain_deadline: String,
    /// The proxy container's resources (Kubernetes quantities).
    pub resources: Resources,
    /// Native sidecars (an init container with `restartPolicy: Always`,
    /// Kubernetes 1.29+): `auto` asks the API server's version, `always`
    /// and `never` decide.
    pub native_sidecars: NativeSidecars,
    /// The proxy's user id (its traffic is never captured).
    pub proxy_uid: i64,
    /// Inbound ports never captured, beside the agent's status port.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound IPv4 CIDRs never captured.
    pub exclude_outbound_cidrs: Vec<String>,
}

/// Requests and limits, as quantities (`100m`, `128Mi`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// Requests.
    pub requests: BTreeMap<String, String>,
    /// Limits.
    pub limits: BTreeMap<String, String>,
}

/// Whether the proxy is a native sidecar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NativeSidecars {
    /// When the API server is 1.29 or newer.
    #[default]
    Auto,
    /// Always (the cluster has the feature).
    Always,
    /// Never: a regular container and a postStart hold.
    Never,
}

/// The status port the agent answers on in pods (Istio's).
pub const STATUS_PORT: u16 = 15021;

impl Default for Template {
    fn default() -> Self {
        Template {
            image: format!("sextant/proxy:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: "IfNotPresent".to_owned(),
            xds_address: "sextant.sextant.svc:15010".to_owned(),
            xds_ca_config_map: None,
            token_audience: None,
            proxy_log_level: "warning".to_owned(),
            concurrency: 2,
            drain_deadline: "25s".to_owned(),
            resources: Resources {
                requests: BTreeMap::from([
                    ("cpu".to_owned(), "100m".to_owned()),
                    ("memory".to_owned(), "128Mi".to_owned()),
                ]),
                limits: BTreeMap::from([("memory".to_owned(), "1Gi".to_owned())]),
            },
            native_sidecars: NativeSidecars::Auto,
            proxy_uid: 1337,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
        }
    }
}

impl Template {
    /// Reads and checks a template file.
    pub fn load(path: &Path) -> Result<Template, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the template {}: {e}", path.display()))?;
        Template::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks a template's text (YAML or JSON).
    pub fn parse(text: &str) -> Result<Template, String> {
        let t: Template = if text.trim().is_empty() {
            Template::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
        };
        t.check()?;
        Ok(t)
    }

    /// Every problem at once.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.image.trim().is_empty() {
            problems.push("image: empty".to_owned());
        }
        if !self.xds_address.contains(':') {
            problems.push(format!(
                "xdsAddress {:?}: write HOST:PORT",
                self.xds_address
            ));
        }
        if humantime::parse_duration(&self.drain_deadline).is_err() {
            problems.push(format!(
                "drainDeadline {:?}: a duration such as 25s",
                self.drain_deadline
            ));
        }
        if !(1..=64).contains(&self.concurrency) {
            problems.push("concurrency: 1 to 64".to_owned());
        }
        if self.proxy_uid <= 0 {
            problems.push("proxyUid: a user id other than root".to_owned());
        }
        for cidr in &self.exclude_outbound_cidrs {
            let (addr, bits) = cidr.split_once('/').unwrap_or((cidr, "32"));
            let ok = addr.parse::<std::net::Ipv4Addr>().is_ok()
                && bits.parse::<u8>().is_ok_and(|b| b <= 32);
            if !ok {
                problems.push(format!(
                    "excludeOutboundCidrs: {cidr:?} is not an IPv4 CIDR"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// A digest of the template, recorded on each injected pod: equal
    /// templates, equal hashes, on every replica.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&canonical))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_a_template_leaves_out_and_unknown_fields_are_errors() {
        let t = Template::parse("xdsAddress: sextant.mesh.svc:15012\nnativeSidecars: never\n")
            .expect("template");
        assert_eq!(t.xds_address, "sextant.mesh.svc:15012");
        assert_eq!(t.native_sidecars, NativeSidecars::Never);
        assert_eq!(t.proxy_uid, 1337);
        assert_ne!(t.hash(), Template::default().hash());
        assert_eq!(Template::default().hash(), Template::default().hash());
        let e = Template::parse("imgae: x\n").expect_err("typo");
        assert!(e.contains("imgae"), "{e}");
        let e = Template::parse("xdsAddress: nope\ndrainDeadline: soon\n").expect_err("bad");
        assert!(
            e.contains("xdsAddress") && e.contains("drainDeadline"),
            "{e}"
        );
    }
}
