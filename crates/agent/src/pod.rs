//! Who the pod is, from what Kubernetes gives a container: environment
//! variables set from the downward API (`fieldRef`) and the downward API
//! volume's `labels` file. Pure, but for reading those.
//!
//! | source | what |
//! |---|---|
//! | `POD_NAME` | the pod's name |
//! | `POD_NAMESPACE` | its namespace |
//! | `INSTANCE_IP` | its IPs (`status.podIPs`, comma-separated; `status.podIP` is one) |
//! | `SERVICE_ACCOUNT` | its service account |
//! | `POD_INFO_DIR/labels` | its labels, `key="value"` per line (the downward API's format) |
//!
//! What is missing is left out of the bootstrap: a pod without labels is
//! a pod without labels, not an error. The largest labels file read is
//! [`MAX_LABELS_BYTES`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// The largest downward-API labels file read.
pub const MAX_LABELS_BYTES: u64 = 256 << 10;

/// What the pod is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Its name.
    pub name: Option<String>,
    /// Its namespace.
    pub namespace: Option<String>,
    /// Its IPs.
    pub ips: Vec<IpAddr>,
    /// Its service account.
    pub service_account: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl PodInfo {
    /// Reads the environment (through `var`) and the labels file in
    /// `info_dir`, if there is one. Problems (an IP that does not parse, a
    /// labels file that cannot be read) are returned beside what was read.
    pub fn read(
        var: impl Fn(&str) -> Option<String>,
        info_dir: Option<&Path>,
    ) -> (PodInfo, Vec<String>) {
        let mut problems = Vec::new();
        let text = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut ips = Vec::new();
        for ip in text("INSTANCE_IP").unwrap_or_default().split(',') {
            let ip = ip.trim();
            if ip.is_empty() {
                continue;
            }
            match ip.parse() {
                Ok(ip) => ips.push(ip),
                Err(_) => problems.push(format!("INSTANCE_IP: {ip:?} is not an IP address")),
            }
        }
        let mut labels = BTreeMap::new();
        if let Some(dir) = info_dir {
            let path = dir.join("labels");
            match read_bounded(&path) {
                Ok(Some(t)) => match parse_labels(&t) {
                    Ok(l) => labels = l,
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                },
                Ok(None) => {}
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        let info = PodInfo {
            name: text("POD_NAME"),
            namespace: text("POD_NAMESPACE"),
            ips,
            service_account: text("SERVICE_ACCOUNT"),
            labels,
        };
        (info, problems)
    }

    /// The node id in Istio's form, which Envoy tooling and Sextant read:
    /// `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN`.
    pub fn node_id(&self, cluster_domain: &str) -> String {
        let ip = self
            .ips
            .first()
            .map_or_else(|| "0.0.0.0".to_owned(), ToString::to_string);
        let ns = self.namespace.as_deref().unwrap_or("default");
        let pod = self.name.as_deref().unwrap_or("unknown");
        format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.{cluster_domain}")
    }
}

fn read_bounded(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(MAX_LABELS_BYTES).read_to_string(&mut text)?;
    Ok(Some(text))
}

/// The downward API's labels file: `key="value"` per line, the value a
/// Go-quoted string.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: no `=`", i + 1));
        };
        let value =
            unquote(value).ok_or_else(|| format!("line {}: the value is not quoted", i + 1))?;
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// A Go-quoted string's value (`"a\"b"` is `a"b`).
fn unquote(quoted: &str) -> Option<String> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_downward_api_labels_file_is_read_as_kubernetes_writes_it() {
        let text = "app=\"reviews\"\npod-template-hash=\"5b7\"\nversion=\"v1\"\nquote=\"a\\\"b\"\n";
        let labels = parse_labels(text).expect("labels");
        assert_eq!(labels["app"], "reviews");
        assert_eq!(labels["quote"], "a\"b");
        assert_eq!(labels.len(), 4);
        assert!(parse_labels("app=reviews").is_err(), "values are quoted");
    }

    #[test]
    fn the_pod_comes_from_its_environment_and_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("labels"), "app=\"web\"\n").expect("write");
        let env = |k: &str| {
            match k {
                "POD_NAME" => Some("web-7d9"),
                "POD_NAMESPACE" => Some("shop"),
                "INSTANCE_IP" => Some("10.1.0.7,fd00::7"),
                "SERVICE_ACCOUNT" => Some("web"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let (pod, problems) = PodInfo::read(env, Some(dir.path()));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(pod.namespace.as_deref(), Some("shop"));
        assert_eq!(pod.ips.len(), 2);
        assert_eq!(pod.labels["app"], "web");
        assert_eq!(
            pod.node_id("cluster.local"),
            "sidecar~10.1.0.7~web-7d9.shop~shop.svc.cluster.local"
        );
        let (_, problems) =
            PodInfo::read(|k| (k == "INSTANCE_IP").then(|| "ten.one".to_owned()), None);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
