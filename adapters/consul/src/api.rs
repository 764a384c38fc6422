//! Consul's HTTP API as the adapter reads it: the wire types of the
//! answers it decodes, and a small client for (blocking) GETs with Consul's
//! index rules and a bound on every answer.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One entry of `/v1/health/service/NAME`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// The node.
    pub node: NodeInfo,
    /// The instance.
    pub service: AgentService,
    /// Node and service checks.
    #[serde(default)]
    pub checks: Vec<HealthCheck>,
}

/// The node part of an entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInfo {
    /// Node name.
    pub node: String,
    /// Node address.
    #[serde(default)]
    pub address: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// Node metadata.
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
}

/// The instance part of an entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Instance id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Address; empty means the node's.
    #[serde(default)]
    pub address: String,
    /// Port.
    #[serde(default)]
    pub port: u32,
    /// Metadata.
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    /// Weights by health.
    #[serde(default)]
    pub weights: Option<Weights>,
    /// `connect-proxy`, `mesh-gateway`, ... or empty.
    #[serde(default)]
    pub kind: Option<String>,
}

/// `Weights`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// Weight while passing.
    pub passing: u32,
    /// Weight while warning.
    pub warning: u32,
}

/// A check of an entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// Check id.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// `passing`, `warning`, `critical` (or `maintenance`).
    pub status: String,
}

/// The largest Consul answer read. A service with 10,000 instances and
/// their checks is about 20 MB of JSON; a larger answer ends the session
/// (the last good state keeps serving) and says why.
pub const MAX_RESPONSE_BYTES: usize = 128 << 20;

/// The next index to ask with, by Consul's rules.
pub fn next_index(previous: u64, returned: u64) -> u64 {
    if returned == 0 {
        1
    } else if returned < previous {
        0
    } else {
        returned
    }
}

/// The client (with the `client` feature): blocking GETs with Consul's
/// index rules and a bound on every answer.
#[cfg(feature = "client")]
mod client {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use sextant_core::Error;

    use super::*;
    use crate::ConsulConfig;

    /// What a GET gave, short of a failure of the session.
    enum Answer<T> {
        Value(T),
        /// Over the size limit: why.
        Oversized(String),
        /// 404 or 403 where that means "not served to us": why.
        NotServed(String),
    }

    /// What a read of one config entry kind gave.
    pub(crate) enum ConfigEntries {
        /// The entries, and the index to block on next.
        Read(Vec<serde_json::Value>, u64),
        /// Consul does not serve this kind to us: why.
        NotServed(String),
    }

    #[derive(Clone)]
    pub(crate) struct Api {
        http: reqwest::Client,
        pub(crate) config: ConsulConfig,
    }

    impl Api {
        pub(crate) fn new(config: &ConsulConfig) -> Result<Api, Error> {
            // The request timeout must outlast a blocking query's wait plus
            // Consul's jitter (wait/16).
            let mut b = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(config.wait + config.wait / 16 + Duration::from_secs(10));
            if let Some(ca) = &config.ca {
                let pem = std::fs::read(ca).map_err(|e| {
                    Error::unavailable_from(format!("cannot read {}", ca.display()), e)
                })?;
                let cert = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| Error::unavailable_from("bad Consul CA", e))?;
                b = b.add_root_certificate(cert);
            }
            if let Some((cert, key)) = &config.client_cert {
                let mut pem = std::fs::read(cert).map_err(|e| {
                    Error::unavailable_from(format!("cannot read {}", cert.display()), e)
                })?;
                pem.extend(std::fs::read(key).map_err(|e| {
                    Error::unavailable_from(format!("cannot read {}", key.display()), e)
                })?);
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| Error::unavailable_from("bad Consul client certificate", e))?;
                b = b.identity(id);
            }
            let http = b
                .build()
                .map_err(|e| Error::unavailable_from("cannot build the HTTP client", e))?;
            Ok(Api {
                http,
                config: config.clone(),
            })
        }

        /// A (blocking, if `index` > 0) GET; the body and `X-Consul-Index`.
        pub(crate) async fn get<T: serde::de::DeserializeOwned>(
            &self,
            path: &[&str],
            index: u64,
        ) -> Result<(T, u64), Error> {
            match self.get_bounded(path, index, false).await? {
                (Answer::Value(t), index) => Ok((t, index)),
                (Answer::Oversized(why) | Answer::NotServed(why), _) => {
                    Err(Error::unavailable(why))
                }
            }
        }

        /// The config entries of `kind` (`service-router`, ...), from `index`:
        /// [`ConfigEntries::NotServed`] when Consul answers 404 (Consul before
        /// 1.5, or a Consul-compatible registry without config entries) or 403
        /// (a token that may not read them), for the caller to go on without
        /// them rather than fail the session.
        pub(crate) async fn config_entries(
            &self,
            kind: &str,
            index: u64,
        ) -> Result<ConfigEntries, Error> {
            match self
                .get_bounded(&["v1", "config", kind], index, true)
                .await?
            {
                (Answer::Value(list), index) => Ok(ConfigEntries::Read(list, index)),
                (Answer::NotServed(why), _) => Ok(ConfigEntries::NotServed(why)),
                (Answer::Oversized(why), _) => Err(Error::unavailable(why)),
            }
        }

        /// A GET as [`Api::get`], with an answer over the size limit given as
        /// its own case (and the index it carried), for the caller to skip that
        /// one object rather than the whole session; with `may_be_absent`, a
        /// 404 or 403 too.
        async fn get_bounded<T: serde::de::DeserializeOwned>(
            &self,
            path: &[&str],
            index: u64,
            may_be_absent: bool,
        ) -> Result<(Answer<T>, u64), Error> {
            let mut url = reqwest::Url::parse(&self.config.addr).map_err(|e| {
                Error::unavailable_from(format!("bad Consul address {:?}", self.config.addr), e)
            })?;
            url.path_segments_mut()
                .map_err(|()| {
                    Error::unavailable(format!("bad Consul address {:?}", self.config.addr))
                })?
                .pop_if_empty()
                .extend(path);
            {
                let mut q = url.query_pairs_mut();
                if index > 0 {
                    q.append_pair("index", &index.to_string());
                    q.append_pair("wait", &format!("{}s", self.config.wait.as_secs().max(1)));
                }
                if let Some(dc) = &self.config.datacenter {
                    q.append_pair("dc", dc);
                }
            }
            let what = format!("GET {}", url.path());
            let mut req = self.http.get(url);
            if let Some(token) = &self.config.token {
                req = req.header("X-Consul-Token", token.expose());
            }
            let resp = req.send().await.map_err(|e| {
                Error::unavailable_from(
                    format!("cannot reach Consul at {} ({what})", self.config.addr),
                    e,
                )
            })?;
            let status = resp.status();
            if may_be_absent
                && matches!(
                    status,
                    reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::FORBIDDEN
                )
            {
                let body = resp.text().await.unwrap_or_default();
                let body: String = body.trim().chars().take(200).collect();
                return Ok((
                    Answer::NotServed(format!("Consul answered {status} to {what}: {body}")),
                    0,
                ));
            }
            if status == reqwest::StatusCode::FORBIDDEN {
                let body = resp.text().await.unwrap_or_default();
                return Err(Error::unavailable(format!(
                    "Consul refused the request ({what}: 403 {}): check --consul-token and that its ACL policy grants service:read and node:read",
                    body.trim()
                )));
            }
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                return Err(Error::unavailable(format!(
                    "Consul answered {status} to {what}: {}",
                    body.trim()
                )));
            }
            let index = resp
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            // Read in chunks up to the limit: a faulty agent or proxy cannot
            // make the adapter buffer without bound.
            let mut resp = resp;
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| {
                Error::unavailable_from(format!("{what}: reading the answer failed"), e)
            })? {
                let limit = self.config.max_response_bytes;
                if body.len() + chunk.len() > limit {
                    return Ok((
                        Answer::Oversized(format!(
                            "Consul's answer to {what} is over the limit of {limit} bytes"
                        )),
                        index,
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            let value = serde_json::from_slice(&body).map_err(|e| {
                Error::unavailable_from(format!("Consul answered {what} with malformed JSON"), e)
            })?;
            Ok((Answer::Value(value), index))
        }

        pub(crate) async fn services(&self, index: u64) -> Result<(BTreeSet<String>, u64), Error> {
            let (map, index): (BTreeMap<String, serde_json::Value>, u64) =
                self.get(&["v1", "catalog", "services"], index).await?;
            Ok((map.into_keys().collect(), index))
        }

        /// A service's instances; an answer over the size limit is that
        /// service's problem only (`Err` inside), not the session's.
        pub(crate) async fn health(
            &self,
            name: &str,
            index: u64,
        ) -> Result<(Result<Vec<ServiceEntry>, String>, u64), Error> {
            let (answer, index) = self
                .get_bounded(&["v1", "health", "service", name], index, false)
                .await?;
            let entries = match answer {
                Answer::Value(v) => Ok(v),
                Answer::Oversized(why) | Answer::NotServed(why) => Err(why),
            };
            Ok((entries, index))
        }
    }
}
#[cfg(feature = "client")]
pub(crate) use client::{Api, ConfigEntries};
