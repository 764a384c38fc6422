//! Pods outside the mesh that should be in it: `sextant inject --audit`,
//! and the control plane's `sextant_injection_pods` metric. A pod should
//! have the proxy when its namespace carries the injection label (or it
//! carries `sidecar.sextant.io/inject: "true"` itself); it escaped when it
//! has none (created before the label, or while the webhook was away), and
//! it is outdated when its proxy came from another template than the
//! current one. Pods opted out, on the host network, or finished are
//! left out: they are not meant to have a proxy.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::render::{INJECT, injected_hash, skip};

/// The namespace label that switches injection on, by default (value
/// `enabled`).
pub const DEFAULT_LABEL: &str = "sextant-injection";

/// How often the control plane audits, by default.
pub const DEFAULT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A pod that should have the current proxy and has not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escaped {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Why it is listed.
    pub state: State,
}

/// What is wrong with an escaped pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// It has no proxy.
    Missing,
    /// Its proxy came from another template (this hash).
    Outdated(String),
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Missing => f.write_str("no sidecar"),
            State::Outdated(h) => write!(f, "sidecar from template {h}"),
        }
    }
}

/// How a pod stands, given the current template's hash; `None` when it
/// is fine or not meant to have a proxy.
pub fn judge(pod: &Value, current: &str) -> Option<State> {
    let (meta, spec) = (&pod["metadata"], &pod["spec"]);
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    match skip(meta, spec) {
        Some(crate::Skip::AlreadyInjected) => match injected_hash(meta) {
            Some(h) if h == current => None,
            Some(h) => Some(State::Outdated(h)),
            None => Some(State::Outdated("unknown".to_owned())),
        },
        Some(crate::Skip::OptedOut | crate::Skip::HostNetwork) => None,
        None => Some(State::Missing),
    }
}

/// Pods listed a page at a time, so that a large cluster costs the
/// auditor one page of memory per request, not every pod at once.
pub const PAGE: u32 = 500;

async fn list_all<K>(api: &Api<K>, params: ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut params = params.limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

/// The pods of `label=enabled` namespaces (and those labelled
/// `sidecar.sextant.io/inject=true` anywhere) that escaped injection or
/// carry another template than `current`.
pub async fn audit(
    client: &kube::Client,
    label: &str,
    current: &str,
) -> Result<Vec<Escaped>, String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let enabled = list_all(
        &namespaces,
        ListParams::default().labels(&format!("{label}=enabled")),
    )
    .await
    .map_err(|e| format!("cannot list namespaces labelled {label}=enabled: {e}"))?;
    let mut out: Vec<Escaped> = Vec::new();
    let mut judge_all = |pods: Vec<Pod>| {
        for pod in pods {
            let value = serde_json::to_value(&pod).unwrap_or(Value::Null);
            let Some(state) = judge(&value, current) else {
                continue;
            };
            let escaped = Escaped {
                namespace: pod.metadata.namespace.unwrap_or_default(),
                name: pod.metadata.name.unwrap_or_default(),
                state,
            };
            if !out.contains(&escaped) {
                out.push(escaped);
            }
        }
    };
    for ns in enabled {
        let Some(name) = ns.metadata.name else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &name);
        let pods = list_all(&api, ListParams::default())
            .await
            .map_err(|e| format!("cannot list the pods of {name}: {e}"))?;
        judge_all(pods);
    }
    let opted_in: Api<Pod> = Api::all(client.clone());
    let pods = list_all(
        &opted_in,
        ListParams::default().labels(&format!("{INJECT}=true")),
    )
    .await
    .map_err(|e| format!("cannot list pods labelled {INJECT}=true: {e}"))?;
    judge_all(pods);
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// The audit run again and again, for a metric: the last result, and
/// whether the last run failed.
#[derive(Debug, Default)]
pub struct Counts {
    /// Pods without a proxy, from the last successful run.
    pub missing: usize,
    /// Pods with a proxy from another template.
    pub outdated: usize,
    /// Runs that failed (the counts stay those of the last good run).
    pub errors: u64,
    /// Whether a run has succeeded yet.
    pub known: bool,
}

/// A background audit of one cluster every `every`, until dropped.
pub struct Auditor {
    counts: std::sync::Arc<std::sync::Mutex<Counts>>,
    task: tokio::task::JoinHandle<()>,
}

impl Auditor {
    /// Audits the cluster `client` reaches every `every` (the first run at
    /// once), against the template hash `current`.
    pub fn spawn(
        client: kube::Client,
        label: String,
        current: String,
        every: std::time::Duration,
    ) -> Auditor {
        let counts = std::sync::Arc::new(std::sync::Mutex::new(Counts::default()));
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            // What was last logged: a change is logged, a repeat is not.
            let mut logged: Option<Result<(usize, usize), String>> = None;
            loop {
                let result = audit(&client, &label, &current).await;
                let seen = result.as_ref().map_err(Clone::clone).map(|escaped| {
                    let missing = escaped.iter().filter(|e| e.state == State::Missing).count();
                    (missing, escaped.len() - missing)
                });
                {
                    let mut c = shared.lock().unwrap_or_else(|p| p.into_inner());
                    match seen {
                        Ok((missing, outdated)) => {
                            (c.missing, c.outdated, c.known) = (missing, outdated, true);
                        }
                        Err(_) => c.errors += 1,
                    }
                }
                if logged.as_ref() != Some(&seen) {
                    match (&result, &seen) {
                        (Ok(escaped), Ok((missing, outdated))) if !escaped.is_empty() => {
                            let first = &escaped[0];
                            tracing::warn!(
                                missing,
                                outdated,
                                first = %format!("{}/{}: {}", first.namespace, first.name, first.state),
                                "pods of injection-enabled namespaces are outside the mesh or on an older template (sextant inject --audit lists them)"
                            );
                        }
                        (Err(e), _) => tracing::warn!(
                            error = %e,
                            "the injection audit failed; the metric keeps the last result (it needs list on namespaces and pods; --k8s-injection-audit-every 0s turns it off)"
                        ),
                        _ => {}
                    }
                    logged = Some(seen);
                }
                tokio::time::sleep(every).await;
            }
        });
        Auditor { counts, task }
    }

    /// The counts as they stand.
    pub fn counts(&self) -> Counts {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        Counts {
            missing: c.missing,
            outdated: c.outdated,
            errors: c.errors,
            known: c.known,
        }
    }
}

impl Drop for Auditor {
    fn drop(&mut self) {
        self.task.abort();
    }
}
