//! The list/watch machinery both sessions run on (services in
//! `services.rs`, rules in `rules.rs`): what one list/watch is
//! ([`Source`]), paged lists, watches that re-open from their last version
//! and report what they read ([`Report`]) to their session, and the naming
//! of an event that cannot be decoded.

use std::time::Duration;

use futures::{AsyncBufRead, AsyncBufReadExt};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use sextant_core::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::convert;
use crate::kinds::Kind;

/// One list/watch: a kind in a namespace (or all namespaces).
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) kind: Kind,
    pub(crate) api: Api<DynamicObject>,
    pub(crate) labels: Option<String>,
    /// `all namespaces`, `namespace NS` or `cluster`, for messages.
    pub(crate) scope: String,
    /// The namespace watched, when one is.
    pub(crate) namespace: Option<String>,
}

impl Source {
    /// The sources of `kind` (at `resource`) in `namespaces` (empty: all
    /// namespaces), selected by `labels`.
    pub(crate) fn of(
        client: &kube::Client,
        kind: Kind,
        resource: &ApiResource,
        namespaces: &[String],
        labels: Option<&str>,
    ) -> Vec<Source> {
        let labels = labels.map(str::to_owned);
        if namespaces.is_empty() {
            return vec![Source {
                kind,
                api: Api::all_with(client.clone(), resource),
                labels,
                scope: "all namespaces".into(),
                namespace: None,
            }];
        }
        namespaces
            .iter()
            .map(|ns| Source {
                kind,
                api: Api::namespaced_with(client.clone(), ns, resource),
                labels: labels.clone(),
                scope: format!("namespace {ns}"),
                namespace: Some(ns.clone()),
            })
            .collect()
    }

    /// The cluster-scoped source of `kind`.
    pub(crate) fn cluster(client: &kube::Client, kind: Kind) -> Source {
        Source {
            kind,
            api: Api::all_with(client.clone(), &kind.resource()),
            labels: None,
            scope: "cluster".into(),
            namespace: None,
        }
    }
}

/// A kube error as a registry error; 403 names the permission.
pub(crate) fn unavailable(source: &Source, what: &str, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(status) if status.code == 403 => Error::unavailable_from(
            format!(
                "forbidden to {what} {} ({}): the service account needs RBAC {} (see deploy/rbac.yaml)",
                source.kind.name(),
                source.scope,
                source.kind.rbac()
            ),
            e,
        ),
        _ => Error::unavailable_from(
            format!("cannot {what} {} ({})", source.kind.name(), source.scope),
            e,
        ),
    }
}

/// A failed watch of source `n`: `410 Gone` and `404` ask for a re-list,
/// anything else ends the session.
fn failure(n: usize, source: &Source, e: kube::Error) -> Report {
    match &e {
        // 404: the kind went away (its CRD was deleted); a re-list finds out.
        kube::Error::Api(s) if s.code == 410 || s.code == 404 => Report::Gone(n),
        _ => Report::Failed(unavailable(source, "watch", e)),
    }
}

/// Lists one source in pages; returns the objects and the list's version.
pub(crate) async fn list(
    source: &Source,
    page_size: u32,
) -> Result<(Vec<DynamicObject>, String), kube::Error> {
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(page_size);
    if let Some(l) = &source.labels {
        params = params.labels(l);
    }
    loop {
        let page = source.api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => {
                return Ok((items, page.metadata.resource_version.unwrap_or_default()));
            }
        }
    }
}

/// Decodes a dynamic object as the typed `K`.
pub(crate) fn typed<K>(kind: Kind, mut obj: DynamicObject) -> Result<K, Error>
where
    K: serde::de::DeserializeOwned,
{
    let what = convert::object_name(kind.name(), &obj.metadata);
    let resource = kind.resource();
    // List items come without kind and apiVersion.
    obj.types = Some(kube::api::TypeMeta {
        api_version: resource.api_version,
        kind: resource.kind,
    });
    serde_json::to_value(obj)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::invalid_object(what, format!("cannot decode: {e}")))
}

/// What a watch task reports to its session.
pub(crate) enum Report {
    Event(usize, Box<WatchEvent<DynamicObject>>),
    /// The version is too old: re-list.
    Gone(usize),
    /// An event that could not be read; skipped.
    Broken(Broken),
    Failed(Error),
}

/// An event that could not be read: the object it names (as
/// [`convert::object_name`] names a readable one, when the text shows it),
/// why, and whether it said the object was deleted (then its problem is
/// over: the object is gone).
#[derive(Debug)]
pub(crate) struct Broken {
    pub(crate) object: String,
    pub(crate) reason: String,
    pub(crate) deleted: bool,
}

impl Broken {
    /// The problem it reports.
    pub(crate) fn error(&self) -> Error {
        Error::invalid_object(self.object.clone(), self.reason.clone())
    }
}

/// Watches every source from its list's version (`versions[n]` for
/// `sources[n]`); their reports arrive on the receiver. The tasks end with
/// the returned set.
pub(crate) fn watch_all(
    sources: &[Source],
    versions: Vec<String>,
    timeout: Duration,
) -> (JoinSet<()>, mpsc::Receiver<Report>) {
    let (reports, rx) = mpsc::channel(1024);
    let mut tasks = JoinSet::new();
    for (n, (source, rv)) in sources.iter().zip(versions).enumerate() {
        tasks.spawn(watch(n, source.clone(), rv, timeout, reports.clone()));
    }
    (tasks, rx)
}

/// The longest watch event read (one object, as JSON). The API server's
/// own limit on an object is about 1.5 MiB (etcd's request limit); a longer
/// line is skipped and reported, so a faulty server cannot make the adapter
/// buffer without bound.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// What reading one line of a watch gave.
enum Line {
    /// A line, without its newline, in the buffer.
    Read,
    /// A line longer than the limit; skipped up to its newline.
    TooLong(usize),
    /// The stream ended (an unfinished last line is dropped).
    End,
}

/// Reads one newline-terminated line into `line`, at most `max` bytes of it.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    let mut skipped = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::End);
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let newline = done > chunk.len();
        if skipped > 0 || line.len() + chunk.len() > max {
            skipped += line.len() + chunk.len();
            line.clear();
        } else {
            line.extend_from_slice(chunk);
        }
        reader.consume_unpin(done);
        if newline {
            return Ok(if skipped > 0 {
                Line::TooLong(skipped)
            } else {
                Line::Read
            });
        }
    }
}

/// `line` as a bare `Status` object (`"kind": "Status"`), if it is one.
fn bare_status(line: &[u8]) -> Option<kube::core::Status> {
    let v: Value = serde_json::from_slice(line).ok()?;
    if v.get("kind").and_then(Value::as_str) != Some("Status") {
        return None;
    }
    serde_json::from_value(v).ok()
}

/// The string value of the first `"key": "..."` in `text`, read without
/// parsing (the text may be broken JSON).
fn string_field(text: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let at = text.find(&quoted)? + quoted.len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let value = rest.strip_prefix('"')?;
    let end = value.find('"')?;
    Some(value[..end].to_owned())
}

/// Names the object of a watch event that could not be decoded, with the
/// key a readable object would have (`KIND NAMESPACE/NAME`), so that its
/// fix or deletion clears the problem; else by where it was. Well-formed
/// JSON with a field of the wrong type (the usual poison) is read as JSON;
/// broken text is scanned. A namespaced watch supplies the namespace the
/// text does not show. Returns the name and whether the event said DELETED.
fn name_broken_event(source: &Source, text: &str, offset: u64) -> (String, bool) {
    let kind = source.kind;
    let (name, namespace, event_type) = match serde_json::from_str::<Value>(text) {
        Ok(v) => {
            let meta = &v["object"]["metadata"];
            let s = |v: &Value| v.as_str().map(str::to_owned);
            (s(&meta["name"]), s(&meta["namespace"]), s(&v["type"]))
        }
        Err(_) => {
            let metadata = text.find("\"metadata\"").map(|i| &text[i..]);
            (
                metadata.and_then(|m| string_field(m, "name")),
                metadata.and_then(|m| string_field(m, "namespace")),
                string_field(text, "type"),
            )
        }
    };
    let deleted = event_type.as_deref() == Some("DELETED");
    match name {
        Some(name) => {
            let ns = namespace
                .or_else(|| source.namespace.clone())
                .unwrap_or_default();
            (format!("{} {ns}/{name}", kind.name()), deleted)
        }
        None => (
            format!(
                "{} watch event at byte {offset} of the watch of {}",
                kind.name(),
                source.scope
            ),
            false,
        ),
    }
}

/// Watches one source from `rv`, re-opening the watch from the latest
/// version each time the server ends it. Lines are read and decoded here
/// rather than by kube's watch stream, so that an event that cannot be
/// decoded is named and skipped instead of ending the session.
async fn watch(
    n: usize,
    source: Source,
    mut rv: String,
    timeout: Duration,
    reports: mpsc::Sender<Report>,
) {
    let mut params = WatchParams::default().timeout(timeout.as_secs().clamp(1, 290) as u32);
    if let Some(l) = &source.labels {
        params = params.labels(l);
    }
    let client = source.api.clone().into_client();
    let mut line = Vec::new();
    loop {
        let opened = tokio::time::Instant::now();
        let request = match kube::core::Request::new(source.api.resource_url()).watch(&params, &rv)
        {
            Ok(r) => r,
            Err(e) => {
                let _ = reports
                    .send(failure(n, &source, kube::Error::BuildRequest(e)))
                    .await;
                return;
            }
        };
        let mut body = match client.request_stream(request).await {
            Ok(b) => std::pin::pin!(b),
            Err(e) => {
                let _ = reports.send(failure(n, &source, e)).await;
                return;
            }
        };
        let mut offset = 0u64;
        loop {
            let at = offset;
            let report = match read_line(&mut body, &mut line, MAX_EVENT_BYTES).await {
                Ok(Line::End) => break,
                // A connection cut mid-watch: re-open from the latest version.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => {
                    let _ = reports
                        .send(failure(n, &source, kube::Error::ReadEvents(e)))
                        .await;
                    return;
                }
                Ok(Line::TooLong(len)) => {
                    offset += len as u64 + 1;
                    Report::Broken(Broken {
                        object: format!(
                            "{} watch event at byte {at} of the watch of {}",
                            source.kind.name(),
                            source.scope
                        ),
                        reason: format!(
                            "event of {len} bytes is over the limit of {MAX_EVENT_BYTES}"
                        ),
                        deleted: false,
                    })
                }
                Ok(Line::Read) => {
                    offset += line.len() as u64 + 1;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<WatchEvent<DynamicObject>>(&line) {
                        Ok(WatchEvent::Error(status)) => {
                            let _ = reports
                                .send(failure(n, &source, kube::Error::Api(status)))
                                .await;
                            return;
                        }
                        Ok(event) => {
                            let version = match &event {
                                WatchEvent::Added(o)
                                | WatchEvent::Modified(o)
                                | WatchEvent::Deleted(o) => o.metadata.resource_version.clone(),
                                WatchEvent::Bookmark(b) => {
                                    Some(b.metadata.resource_version.clone())
                                }
                                WatchEvent::Error(_) => None,
                            };
                            if let Some(v) = version.filter(|v| !v.is_empty()) {
                                rv = v;
                            }
                            Report::Event(n, Box::new(event))
                        }
                        Err(e) => {
                            // A bare Status (not an ERROR event) ends the
                            // watch; anything else is one broken event.
                            // (Any JSON object decodes as a Status, whose
                            // fields are all optional: its kind decides.)
                            if let Some(status) = bare_status(&line) {
                                let _ = reports
                                    .send(failure(n, &source, kube::Error::Api(status.boxed())))
                                    .await;
                                return;
                            }
                            let text = String::from_utf8_lossy(&line);
                            let (object, deleted) = name_broken_event(&source, &text, at);
                            Report::Broken(Broken {
                                object,
                                reason: format!("cannot decode watch event: {e}"),
                                deleted,
                            })
                        }
                    }
                }
            };
            if reports.send(report).await.is_err() {
                return;
            }
        }
        // The server ended the watch (timeout) or the connection closed
        // cleanly: re-open from the latest version. If the server is gone,
        // the next watch call fails and the session ends. A server that
        // ends watches at once is not polled in a tight loop.
        tokio::time::sleep_until(opened + Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(namespace: Option<&str>) -> Source {
        // Never contacted: naming only reads the kind and scope.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let resource = Kind::Slice.resource();
        let ns: Vec<String> = namespace.into_iter().map(str::to_owned).collect();
        Source::of(&client, Kind::Slice, &resource, &ns, None).remove(0)
    }

    #[tokio::test]
    async fn a_broken_event_is_named_as_its_object_would_be() {
        let all = source(None);
        // Well-formed JSON, a field of the wrong type (labels as a string).
        let poison = r#"{"type":"ADDED","object":{"kind":"EndpointSlice","metadata":{"labels":"x","name":"web-poison","namespace":"default"}}}"#;
        assert_eq!(
            name_broken_event(&all, poison, 0),
            ("EndpointSlice default/web-poison".to_owned(), false)
        );
        let deleted = poison.replace("ADDED", "DELETED");
        assert_eq!(
            name_broken_event(&all, &deleted, 0),
            ("EndpointSlice default/web-poison".to_owned(), true)
        );
        // Cut off: scanned; a namespaced watch supplies the namespace.
        let cut = r#"{"type":"MODIFIED","object":{"metadata":{"name":"web-poison","uid":"#;
        assert_eq!(
            name_broken_event(&source(Some("shop")), cut, 0).0,
            "EndpointSlice shop/web-poison"
        );
        assert_eq!(
            name_broken_event(&all, "<html>502</html>", 77).0,
            "EndpointSlice watch event at byte 77 of the watch of all namespaces"
        );
    }
}
