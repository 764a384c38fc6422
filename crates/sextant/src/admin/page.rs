//! The admin root as a page a person reads (Istio's old ControlZ did this):
//! registries with their state and staleness, proxies by kind and sync
//! state, conflicts, recent NACKs and pushes. Rendered on the server, no
//! JavaScript, refreshing itself every few seconds; behind the admin token
//! like the debug endpoints when one is set (it shows every proxy).

use std::fmt::Write as _;

use sextant_aggregate::SyncState;
use sextant_xds::server::{ProxySync, TypeSync};

use super::AdminState;

/// Seconds between refreshes.
const REFRESH_SECONDS: u32 = 5;
/// Rows shown at most per table (the debug endpoints have everything).
const MAX_ROWS: usize = 200;

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(t: Option<std::time::SystemTime>) -> String {
    t.and_then(|t| t.elapsed().ok())
        .map_or_else(|| "-".to_owned(), |d| format!("{} s ago", d.as_secs()))
}

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>], total: usize) {
    if total == 0 {
        out.push_str("<p class=none>none</p>");
        return;
    }
    out.push_str("<table><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for r in rows.iter().take(MAX_ROWS) {
        out.push_str("<tr>");
        for cell in r {
            // A cell is escaped text, or a state word styled by its class.
            let class = match cell.as_str() {
                "SYNCED" | "CURRENT" | "synced" => " class=ok",
                "NACKED" | "STALE" | "stale" | "dropped" => " class=bad",
                "BEHIND" | "SENT" | "syncing" => " class=warn",
                _ => "",
            };
            let _ = write!(out, "<td{class}>{}</td>", esc(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    if total > MAX_ROWS {
        let _ = write!(
            out,
            "<p>{} more (see the debug endpoints)</p>",
            total - MAX_ROWS
        );
    }
    if total == 0 {
        out.push_str("<p class=none>none</p>");
    }
}

/// The page.
pub(super) fn render(s: &AdminState) -> String {
    let status = s.aggregator.status().borrow().clone();
    let connections = s.xds.connections();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta http-equiv=refresh content={REFRESH_SECONDS}>\
         <title>Sextant</title><style>\
         body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
         th,td{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}\
         th{{background:#f3f3f3}}.ok{{color:#176f2c}}.bad{{color:#b00020;font-weight:600}}\
         .warn{{color:#9a6700}}.none{{color:#777}}\
         </style></head><body><h1>Sextant</h1><p>{} &middot; {} services, {} endpoints &middot; \
         refreshes every {REFRESH_SECONDS} s &middot; \
         <a href=/metrics>metrics</a> <a href=/debug/registryz>registryz</a> \
         <a href=/debug/configz>configz</a> <a href=/debug/syncz>syncz</a> \
         <a href=/debug/events>events</a></p>",
        if status.ready {
            "serving"
        } else {
            "starting: not every registry has synced"
        },
        status.services,
        status.endpoints,
    );

    out.push_str("<h2>Registries</h2>");
    let rows: Vec<Vec<String>> = status
        .registries
        .iter()
        .map(|r| {
            let state = match r.state {
                SyncState::Syncing => "syncing",
                SyncState::Synced => "synced",
                SyncState::Stale => "stale",
                SyncState::Dropped => "dropped",
            };
            vec![
                r.id.to_string(),
                format!("{:?}", r.kind).to_lowercase(),
                state.to_owned(),
                ago(r.last_sync),
                ago(r.stale_since),
                format!("{} / {}", r.services, r.endpoints),
                r.problems.len().to_string(),
                r.last_error
                    .as_ref()
                    .map_or_else(String::new, |e| e.message.clone()),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "registry",
            "kind",
            "state",
            "last sync",
            "stale since",
            "services / endpoints",
            "problems",
            "last error",
        ],
        &rows,
        rows.len(),
    );

    out.push_str("<h2>Proxies</h2>");
    let mut by: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for c in &connections {
        let sync = if c.sync == ProxySync::Current {
            "CURRENT"
        } else {
            "BEHIND"
        };
        *by.entry((c.client.as_str(), sync)).or_default() += 1;
    }
    let summary: Vec<String> = by
        .iter()
        .map(|((client, sync), n)| format!("{n} {client} {sync}"))
        .collect();
    let _ = write!(
        out,
        "<p>{}</p>",
        esc(&if summary.is_empty() {
            "none connected".to_owned()
        } else {
            summary.join(", ")
        })
    );
    let mut rows: Vec<Vec<String>> = connections
        .iter()
        .map(|c| {
            let state = |kind: sextant_xds::ResourceType| {
                c.types
                    .iter()
                    .find(|t| t.kind == kind)
                    .map_or("-", |t| match t.state {
                        TypeSync::NotSent => "NOT SENT",
                        TypeSync::Synced => "SYNCED",
                        TypeSync::Sent => "SENT",
                        TypeSync::Stale => "STALE",
                        TypeSync::Nacked => "NACKED",
                    })
            };
            vec![
                c.node_id.clone(),
                if c.user_agent.is_empty() {
                    c.client.as_str().to_owned()
                } else {
                    c.user_agent.clone()
                },
                c.peer.identity.clone().unwrap_or_default(),
                state(sextant_xds::ResourceType::Cluster).to_owned(),
                state(sextant_xds::ResourceType::Endpoint).to_owned(),
                state(sextant_xds::ResourceType::Listener).to_owned(),
                state(sextant_xds::ResourceType::Route).to_owned(),
                if c.sync == ProxySync::Current {
                    "CURRENT"
                } else {
                    "BEHIND"
                }
                .to_owned(),
            ]
        })
        .collect();
    rows.sort();
    table(
        &mut out,
        &[
            "node", "client", "identity", "CDS", "EDS", "LDS", "RDS", "sync",
        ],
        &rows,
        rows.len(),
    );

    out.push_str("<h2>Conflicts</h2>");
    let view = s.aggregator.view().borrow().clone();
    let rows: Vec<Vec<String>> = view
        .conflicts
        .iter()
        .map(|c| {
            vec![
                c.hostname.to_string(),
                c.field.as_str().to_owned(),
                c.winner.to_string(),
                c.other.to_string(),
                c.detail.clone(),
            ]
        })
        .collect();
    table(
        &mut out,
        &["host", "field", "served", "disagrees", "detail"],
        &rows,
        rows.len(),
    );

    out.push_str("<h2>Recent NACKs</h2>");
    let nacks = s.xds.nacks();
    let rows: Vec<Vec<String>> = nacks
        .iter()
        .rev()
        .take(20)
        .map(|n| {
            vec![
                humantime::format_rfc3339_seconds(n.at).to_string(),
                n.node_id.clone(),
                n.kind.to_string(),
                n.version.clone(),
                n.error.clone(),
            ]
        })
        .collect();
    table(
        &mut out,
        &["at", "node", "type", "version", "error"],
        &rows,
        rows.len(),
    );

    out.push_str("<h2>Recent events</h2>");
    let events = s.xds.metrics().journal.since(0, 20);
    let rows: Vec<Vec<String>> = events
        .iter()
        .rev()
        .map(|e| {
            vec![
                humantime::format_rfc3339_seconds(e.at).to_string(),
                serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                e.subject.clone(),
                e.message.clone(),
            ]
        })
        .collect();
    table(
        &mut out,
        &["at", "kind", "subject", "what"],
        &rows,
        rows.len(),
    );
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
