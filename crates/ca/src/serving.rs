//! Sextant's own TLS certificate, made by its CA: with `--ca-dir` and no
//! `--tls-cert`, the xDS TLS port (and the certificate API on it) serves a
//! certificate the CA issues for the names proxies dial, renewed at half
//! its life, and trusts client certificates that chain to the mesh's root
//! (workloads renew with the certificate they hold).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sextant_xds::server::tls::{ClientAuth, ServingCert, ServingPem};

use crate::authority::Authority;

/// The names Sextant's certificate carries by default: its Service in the
/// manifests of `deploy/`, and loopback.
pub const DEFAULT_NAMES: [&str; 4] = [
    "sextant.sextant.svc",
    "sextant.sextant.svc.cluster.local",
    "localhost",
    "127.0.0.1",
];

/// The longest Sextant's own certificate lives.
pub const SERVING_TTL: Duration = Duration::from_secs(30 * 86_400);

struct Made {
    pem: ServingPem,
    renew_at: SystemTime,
    root: String,
}

/// A serving certificate from the CA, renewed at half its life or when
/// the CA changes.
pub struct CaServing {
    authority: Arc<Authority>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    client_auth: ClientAuth,
    made: Mutex<Option<Made>>,
}

impl CaServing {
    /// For `names` (DNS names and IP addresses), asking clients for
    /// certificates as `client_auth` says.
    pub fn new(authority: Arc<Authority>, names: &[String], client_auth: ClientAuth) -> CaServing {
        let (ips, dns): (Vec<&String>, Vec<&String>) =
            names.iter().partition(|n| n.parse::<IpAddr>().is_ok());
        CaServing {
            authority,
            dns: dns.into_iter().cloned().collect(),
            ips: ips.into_iter().filter_map(|n| n.parse().ok()).collect(),
            client_auth,
            made: Mutex::new(None),
        }
    }

    fn make(&self) -> Result<Made, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| format!("a key: {e}"))?;
        let ttl = SERVING_TTL.min(self.authority.max_ttl().max(Duration::from_secs(3600)));
        let issued = self
            .authority
            .issue_server(&key, &self.dns, &self.ips, ttl)
            .map_err(|e| e.to_string())?;
        let now = SystemTime::now();
        let life = issued.not_after.duration_since(now).unwrap_or_default();
        let root = self.authority.root_pem();
        // The leaf and what is above it, but not the root: peers have it.
        let chain: String = issued.chain[..issued.chain.len().saturating_sub(1).max(1)].concat();
        Ok(Made {
            pem: ServingPem {
                chain: chain.into_bytes(),
                key: key.serialize_pem().into_bytes(),
                client_ca: Some(root.clone().into_bytes()),
                client_auth: self.client_auth,
            },
            renew_at: now + life / 2,
            root,
        })
    }
}

impl ServingCert for CaServing {
    fn current(&self) -> Result<ServingPem, String> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let due = match &*made {
            None => true,
            Some(m) => SystemTime::now() >= m.renew_at || m.root != self.authority.root_pem(),
        };
        if due {
            match self.make() {
                Ok(m) => *made = Some(m),
                // Keep serving the one there is while it lasts.
                Err(e) if made.is_some() => {
                    tracing::warn!(error = %e, "cannot renew Sextant's own certificate; the current one keeps serving");
                }
                Err(e) => return Err(e),
            }
        }
        made.as_ref()
            .map(|m| m.pem.clone())
            .ok_or_else(|| "no certificate".to_owned())
    }
}
