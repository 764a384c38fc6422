//! Envoy's admin API as the agent uses it: a few HTTP/1.1 requests on
//! loopback (stats, drain), each bounded in time and size. Written out
//! rather than through an HTTP client crate: five calls to one local
//! server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one admin call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest admin answer read.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// A request to Envoy's admin API: `(status, body)`, or why it failed.
pub async fn call(admin: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    tokio::time::timeout(CALL_TIMEOUT, call_inner(admin, method, path))
        .await
        .map_err(|_| {
            format!("Envoy's admin did not answer {method} {path} within {CALL_TIMEOUT:?}")
        })?
}

async fn call_inner(admin: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(admin)
        .await
        .map_err(|e| format!("cannot reach Envoy's admin at {admin}: {e}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Envoy's admin: {e}"))?;
    let mut raw = Vec::new();
    (&mut s)
        .take(MAX_ANSWER_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("Envoy's admin: {e}"))?;
    if raw.len() > MAX_ANSWER_BYTES {
        return Err(format!(
            "Envoy's admin answered {path} with more than {MAX_ANSWER_BYTES} bytes"
        ));
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("Envoy's admin answered {path} without headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("Envoy's admin answered {path} without a status"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// A chunked body's data.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
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

/// Envoy's stats whose names match `filter` (a regular expression), as
/// numbers; text stats and histograms are left out.
pub async fn stats(admin: SocketAddr, filter: &str) -> Result<BTreeMap<String, u64>, String> {
    let (status, body) = call(admin, "GET", &format!("/stats?filter={filter}")).await?;
    if status != 200 {
        return Err(format!("Envoy's admin answered /stats with {status}"));
    }
    Ok(body
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect())
}

/// Whether Envoy serves: it is LIVE (`server.state` 0); and, when `first`
/// (it has not been ready before), it has accepted clusters and listeners
/// from the control plane and none of them is still warming. A warming
/// listener is not listening yet: a connection to it is refused, so the
/// first readiness waits for every listener to be active. `Err` says what
/// is missing.
pub async fn ready(admin: SocketAddr, first: bool) -> Result<(), String> {
    let s = stats(
        admin,
        "^(server\\.state|cluster_manager\\.cds\\.update_success|listener_manager\\.lds\\.update_success|cluster_manager\\.warming_clusters|listener_manager\\.total_listeners_warming|listener_manager\\.workers_started)$",
    )
    .await?;
    judge(&s, first)
}

/// [`ready`]'s rule over Envoy's statistics.
fn judge(s: &BTreeMap<String, u64>, first: bool) -> Result<(), String> {
    match s.get("server.state") {
        Some(0) => {}
        Some(state) => return Err(format!("Envoy is not live yet (server.state {state})")),
        None => return Err("Envoy reports no server.state".into()),
    }
    if !first {
        return Ok(());
    }
    let get = |k: &str| s.get(k).copied().unwrap_or(0);
    if get("cluster_manager.cds.update_success") == 0 {
        return Err("Envoy has not accepted clusters from Sextant yet".into());
    }
    if get("listener_manager.lds.update_success") == 0 {
        return Err("Envoy has not accepted listeners from Sextant yet".into());
    }
    if get("listener_manager.workers_started") == 0 {
        return Err("Envoy's workers have not started".into());
    }
    let warming = get("listener_manager.total_listeners_warming");
    if warming > 0 {
        return Err(format!("{warming} of Envoy's listeners are still warming"));
    }
    let warming = get("cluster_manager.warming_clusters");
    if warming > 0 {
        return Err(format!("{warming} of Envoy's clusters are still warming"));
    }
    Ok(())
}

/// Connections open on Envoy's listeners (the admin listener aside).
pub async fn active_connections(admin: SocketAddr) -> Result<u64, String> {
    let s = stats(admin, "^listener\\..*\\.downstream_cx_active$").await?;
    Ok(s.iter()
        .filter(|(k, _)| !k.starts_with("listener.admin."))
        .map(|(_, v)| *v)
        .sum())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[test]
    fn readiness_waits_for_warming_listeners_the_first_time_only() {
        let stats = |warming: u64| -> BTreeMap<String, u64> {
            [
                ("server.state", 0),
                ("cluster_manager.cds.update_success", 1),
                ("listener_manager.lds.update_success", 1),
                ("listener_manager.workers_started", 1),
                ("listener_manager.total_listeners_warming", warming),
                ("cluster_manager.warming_clusters", 0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
        };
        let e = super::judge(&stats(1), true).expect_err("a listener is warming");
        assert!(e.contains("warming"), "{e}");
        assert!(super::judge(&stats(0), true).is_ok());
        assert!(
            super::judge(&stats(1), false).is_ok(),
            "once ready, a push's warming is fine"
        );
        let mut not_live = stats(0);
        not_live.insert("server.state".into(), 2);
        assert!(super::judge(&not_live, false).is_err());
        let mut no_lds = stats(0);
        no_lds.insert("listener_manager.lds.update_success".into(), 0);
        assert!(super::judge(&no_lds, true).is_err());
    }

    #[test]
    fn chunked_bodies_are_read_whole() {
        assert_eq!(
            super::dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
