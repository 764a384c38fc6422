//! The application's probes, run by the agent for the kubelet (Istio's
//! `/app-health`): injection points HTTP and TCP probes at the status port
//! and hands the originals over in `SEXTANT_APP_PROBES` (see
//! `sextant_inject::probes`). A probe is run on loopback, where neither
//! capture nor mutual TLS stands between the agent and the application,
//! within the probe's own timeout; the answer is the application's status
//! (an HTTP probe), 200 (a TCP probe that connected), or 503 with why.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Probes kept at most (a pod has a few containers, three probes each).
const MAX_PROBES: usize = 64;
/// The longest timeout honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The most of an application's answer read (its status line is enough).
const MAX_ANSWER_BYTES: u64 = 16 << 10;

/// What one probe does (also a VM's, `vm.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// `GET path` on the port, with these headers.
    Http {
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// A TCP connection to the port.
    Tcp { port: u16 },
}

/// One application probe.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Probe {
    check: Check,
    timeout: Duration,
}

/// The application's probes, by the agent's path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppProbes(BTreeMap<String, Probe>);

/// Text safe inside a request line or header: no control characters.
fn clean(s: &str) -> bool {
    !s.is_empty() && s.len() <= 1024 && !s.chars().any(char::is_control)
}

fn port(v: &Value) -> Result<u16, String> {
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {v} is not a port number"))
}

fn probe(spec: &Value) -> Result<Probe, String> {
    let timeout =
        Duration::from_secs(spec["timeoutSeconds"].as_u64().unwrap_or(1).max(1)).min(MAX_TIMEOUT);
    let check = if let Some(get) = spec.get("httpGet") {
        let path = get["path"].as_str().unwrap_or("/");
        if !path.starts_with('/') || !clean(path) || path.contains(' ') {
            return Err(format!("path {path:?} is not a request path"));
        }
        let mut headers = Vec::new();
        for h in get["httpHeaders"].as_array().into_iter().flatten().take(16) {
            let (Some(name), Some(value)) = (h["name"].as_str(), h["value"].as_str()) else {
                return Err(format!("header {h} needs a name and a value"));
            };
            if !clean(name) || name.contains(':') || value.chars().any(char::is_control) {
                return Err(format!("header {name:?} is not a header"));
            }
            headers.push((name.to_owned(), value.to_owned()));
        }
        Check::Http {
            port: port(&get["port"])?,
            path: path.to_owned(),
            headers,
        }
    } else if let Some(tcp) = spec.get("tcpSocket") {
        Check::Tcp {
            port: port(&tcp["port"])?,
        }
    } else {
        return Err("neither httpGet nor tcpSocket".into());
    };
    Ok(Probe { check, timeout })
}

impl AppProbes {
    /// The probes in `json` (injection's form); an error names the first
    /// entry that cannot be run.
    pub fn parse(json: &str) -> Result<AppProbes, String> {
        let all: BTreeMap<String, Value> =
            serde_json::from_str(json).map_err(|e| format!("not a JSON object of probes: {e}"))?;
        if all.len() > MAX_PROBES {
            return Err(format!("{} probes; at most {MAX_PROBES}", all.len()));
        }
        let mut out = BTreeMap::new();
        for (path, spec) in all {
            if !path.starts_with("/app-health/") || !clean(&path) {
                return Err(format!("{path:?} is not an /app-health/ path"));
            }
            let p = probe(&spec).map_err(|e| format!("{path}: {e}"))?;
            out.insert(path, p);
        }
        Ok(AppProbes(out))
    }

    /// How many probes there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs the probe at `path`: `None` when there is none; else the
    /// status to answer the kubelet with, and a line saying why.
    pub async fn run(&self, path: &str) -> Option<(u16, String)> {
        let p = self.0.get(path)?;
        let outcome = tokio::time::timeout(p.timeout, check(&p.check)).await;
        Some(match outcome {
            Ok(Ok(status)) => (status, format!("the application answered {status}\n")),
            Ok(Err(e)) => (503, format!("{e}\n")),
            Err(_) => (
                503,
                format!("the application did not answer within {:?}\n", p.timeout),
            ),
        })
    }
}

/// Runs `check` against the application on loopback: the HTTP status it
/// answered (200 for a TCP connection made), or why it could not.
pub(crate) async fn check(check: &Check) -> Result<u16, String> {
    let port = match check {
        Check::Http { port, .. } | Check::Tcp { port } => *port,
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to the application on {addr}: {e}"))?;
    let Check::Http { path, headers, .. } = check else {
        return Ok(200);
    };
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/sextant-agent\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("the application on {addr}: {e}"))?;
    // The status line is all that is read: a large body costs nothing.
    let mut head = Vec::new();
    let mut limited = (&mut stream).take(MAX_ANSWER_BYTES);
    let mut buf = [0u8; 1024];
    while !head.contains(&b'\n') {
        let n = limited
            .read(&mut buf)
            .await
            .map_err(|e| format!("the application on {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| format!("the application on {addr} did not answer HTTP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server on loopback answering `status` to every
    /// request; the port, and what it was asked.
    async fn app(status: u16) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn probes_run_on_loopback_and_answer_with_the_applications_status() {
        let (healthy, mut asked) = app(204).await;
        let (sick, _) = app(500).await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let probes = AppProbes::parse(&format!(
            r#"{{
              "/app-health/app/livez": {{"httpGet": {{"path": "/healthz?x=1", "port": {healthy},
                 "httpHeaders": [{{"name": "X-Probe", "value": "yes"}}]}}, "timeoutSeconds": 2}},
              "/app-health/app/readyz": {{"httpGet": {{"path": "/", "port": {sick}}}}},
              "/app-health/app/startupz": {{"tcpSocket": {{"port": {healthy}}}}},
              "/app-health/db/livez": {{"tcpSocket": {{"port": {closed}}}}}
            }}"#
        ))
        .expect("parse");
        assert_eq!(probes.len(), 4);
        let (status, _) = probes.run("/app-health/app/livez").await.expect("probe");
        assert_eq!(status, 204);
        let request = asked.recv().await.expect("asked");
        assert!(
            request.starts_with("GET /healthz?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nX-Probe: yes\r\n"), "{request}");
        assert_eq!(
            probes.run("/app-health/app/readyz").await.expect("probe").0,
            500
        );
        assert_eq!(
            probes
                .run("/app-health/app/startupz")
                .await
                .expect("probe")
                .0,
            200
        );
        let (status, why) = probes.run("/app-health/db/livez").await.expect("probe");
        assert_eq!(status, 503);
        assert!(why.contains("cannot connect"), "{why}");
        assert!(probes.run("/app-health/nope/livez").await.is_none());
    }

    #[test]
    fn what_cannot_be_run_is_refused_by_name() {
        for (json, says) in [
            ("[]", "not a JSON object"),
            (
                r#"{"/x": {"tcpSocket": {"port": 1}}}"#,
                "not an /app-health/ path",
            ),
            (
                r#"{"/app-health/a/livez": {"tcpSocket": {"port": 0}}}"#,
                "not a port",
            ),
            (
                r#"{"/app-health/a/livez": {"httpGet": {"port": 1, "path": "/a\r\nX: y"}}}"#,
                "not a request path",
            ),
            (
                r#"{"/app-health/a/livez": {"httpGet": {"port": 1, "httpHeaders": [{"name": "A\r\nB", "value": "v"}]}}}"#,
                "is not a header",
            ),
            (
                r#"{"/app-health/a/livez": {"exec": {}}}"#,
                "neither httpGet nor tcpSocket",
            ),
        ] {
            let e = AppProbes::parse(json).expect_err(json);
            assert!(e.contains(says), "{json}: {e}");
        }
    }
}
