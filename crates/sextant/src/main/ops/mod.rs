//! The operator's commands. Each reads what Sextant says of itself and
//! merges what its replicas say; none needs to reach a proxy:
//! - [`status`]: `sextant status` (is every proxy holding the newest
//!   configuration?) and `sextant wait` (block until every proxy that
//!   receives a service or rule holds its newest state), over each
//!   replica's admin port (`/debug/syncz`);
//! - [`proxy_config`]: `sextant proxy-config`, what one proxy receives,
//!   over CSDS on an xDS port;
//! - [`describe`]: `sextant describe service/HOST` and `describe pod
//!   NS/NAME`, over the admin port.
//!
//! This file holds what they share: the admin target flags, a bounded
//! HTTP GET, and the JSON and table helpers.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod describe;
mod proxy_config;
mod status;

pub(crate) use describe::{DescribeArgs, describe};
pub(crate) use proxy_config::{ProxyConfigArgs, proxy_config};
pub(crate) use status::{StatusArgs, WaitArgs, status, wait};

/// The replicas to ask.
#[derive(Args, Clone)]
pub(crate) struct AdminTarget {
    /// Sextant's admin address, HOST:PORT; repeat it (or separate with
    /// commas) for replicas: their proxies are shown in one table.
    #[arg(
        long = "admin-addr",
        env = "SEXTANT_ADMIN_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:15014"
    )]
    admin_addrs: Vec<String>,
    /// The server's admin token (its --admin-token), when it has one.
    #[arg(long, env = "SEXTANT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

/// The largest answer read from an admin port.
const MAX_ANSWER: u64 = 64 << 20;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` on an admin port: the status and body, or why not.
async fn get(addr: &str, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let call = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;
        let auth = token.map_or(String::new(), |t| {
            format!("Authorization: Bearer {}\r\n", t.trim())
        });
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut raw = Vec::new();
        (&mut s)
            .take(MAX_ANSWER)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{addr} did not answer HTTP"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{addr} did not answer HTTP"))?;
        let chunked = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        Ok((
            status,
            if chunked {
                dechunk(body)
            } else {
                body.to_owned()
            },
        ))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| format!("{addr} did not answer within {REQUEST_TIMEOUT:?}"))?
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A JSON answer from `path` on `addr`.
async fn json(addr: &str, path: &str, token: Option<&str>) -> Result<Value, String> {
    match get(addr, path, token).await? {
        (200, body) => serde_json::from_str(&body).map_err(|e| format!("{addr}{path}: {e}")),
        (401, _) => Err(format!(
            "{addr} wants the admin token: --admin-token or SEXTANT_ADMIN_TOKEN"
        )),
        (status, body) => Err(format!("{addr}{path}: {status} {}", body.trim())),
    }
}

/// A command's text printed, or its error: the exit code either way.
fn printed(text: Result<String, String>) -> ExitCode {
    match text {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `v` as a URL query value (percent-encoded but for unreserved bytes).
fn query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `items` joined by `sep`, or `empty` when there are none.
fn joined(items: &[String], sep: &str, empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(sep)
    }
}

/// A JSON object of labels as `k=v` pairs.
fn label_pairs(v: &Value) -> Vec<String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect()
}

/// The short name of a type as /debug/syncz writes it (`Cluster`...).
fn short(kind: &str) -> &str {
    match kind {
        "Cluster" => "cds",
        "Endpoint" => "eds",
        "Listener" => "lds",
        "Route" => "rds",
        other => other,
    }
}

/// Rows as aligned columns.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn rule_key(k: &Value) -> String {
    format!("{} {}/{}", s(&k["kind"]), s(&k["namespace"]), s(&k["name"]))
}
