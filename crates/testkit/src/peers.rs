//! Real programs the tests talk to, installed by `scripts/install-peers.sh`
//! into the repository. A test that needs one and cannot find it fails with
//! a message saying how to install it; it never skips.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

fn require(path: PathBuf, what: &str, env: &str) -> PathBuf {
    if path.exists() {
        return path;
    }
    panic!(
        "{what} is needed by this test and was not found at {}.\n\
         Run scripts/install-peers.sh (scripts/test.sh runs it), or set {env} to its path.",
        path.display()
    );
}

/// Kills (SIGKILL) every process whose command line has an argument
/// containing `needle`: what a test started through another process (an
/// Envoy its agent started, when the agent is killed first) and must not
/// leave behind.
pub fn kill_processes_with_arg(needle: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(needle))
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .output();
        }
    }
}

/// The Envoy binary: `$SEXTANT_ENVOY`, else `.venv/bin/envoy`.
pub fn envoy_path() -> PathBuf {
    let path = std::env::var_os("SEXTANT_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"));
    require(path, "Envoy 1.40", "SEXTANT_ENVOY")
}

/// The Python with grpcio: `$SEXTANT_PYTHON`, else `.venv/bin/python`.
pub fn python_path() -> PathBuf {
    let path = std::env::var_os("SEXTANT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    require(path, "Python with grpcio", "SEXTANT_PYTHON")
}

/// The directory holding `node_modules/@grpc/grpc-js-xds`.
pub fn node_clients_dir() -> PathBuf {
    let dir = workspace_root().join("crates/xds/tests/clients");
    require(
        dir.join("node_modules/@grpc/grpc-js-xds"),
        "Node @grpc/grpc-js-xds",
        "(none)",
    );
    dir
}

/// A free loopback port for a process to bind later (Envoy's listener,
/// etcd, the binary's ports).
///
/// Not the kernel's pick for port 0: everything else in the tests binds
/// port 0 and gets a port from the ephemeral range (32768-60999 on Linux),
/// so a port picked there and released is soon handed to another test's
/// listener or connection, and the process that was meant to bind it finds
/// it taken (this failed CI once: Envoy's outbound listener could not bind
/// and requests reached another test's listener). These ports come from
/// below that range, each at most once per test process, starting at a
/// random offset so that concurrent test processes rarely meet; each is
/// checked free when picked.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        fastrand::u32(0..SPAN),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = u16::try_from(LOW + n).unwrap_or(u16::MAX);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}-{}", LOW + SPAN)
}

/// A listener on a free loopback port, and its address.
pub async fn loopback_listener() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    (listener, addr)
}

/// A running Envoy, killed when dropped.
pub struct Envoy {
    child: Child,
    /// Envoy's admin address.
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy with `bootstrap` (YAML). Its admin port should be 0:
    /// the real one is read back from `--admin-address-path`.
    pub async fn start(bootstrap: &str) -> Envoy {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = dir.path().join("envoy.yaml");
        let admin_file = dir.path().join("admin.txt");
        let log = dir.path().join("envoy.log");
        std::fs::write(&config, bootstrap).unwrap_or_else(|e| panic!("write bootstrap: {e}"));
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let child = Command::new(envoy_path())
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Envoy: {e}"));
        let mut envoy = Envoy {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&admin_file)
                && let Ok(addr) = text.trim().parse()
            {
                envoy.admin = addr;
                return envoy;
            }
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("Envoy exited at start ({status}):\n{}", envoy.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "Envoy did not publish its admin address within 10 s:\n{}",
            envoy.log()
        );
    }

    /// Envoy's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Envoy's log so far (the tail, for failure messages).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// GET on the admin interface: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, "localhost", path)
            .await
            .unwrap_or_else(|e| panic!("Envoy admin {path}: {e}"))
    }

    /// Waits until `/ready` says LIVE (the control plane has answered).
    pub async fn wait_live(&self) {
        let mut last = String::new();
        for _ in 0..300 {
            match http_get(self.admin, "localhost", "/ready").await {
                Ok((200, body)) if body.trim() == "LIVE" => return,
                Ok((status, body)) => last = format!("{status} {}", body.trim()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, stats) = self.admin_get("/stats?filter=control_plane|init").await;
        panic!(
            "Envoy never became LIVE within 15 s (last /ready: {last}); stats:\n{stats}\nlog:\n{}",
            self.log()
        );
    }

    /// Sum of every stat whose name ends with `suffix` (e.g. `update_rejected`).
    pub async fn stat_sum(&self, suffix: &str) -> u64 {
        let (_, body) = self.admin_get("/stats").await;
        body.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(name, _)| name.ends_with(suffix))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }
}

/// A minimal HTTP/1.1 GET; returns status and body.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let r = http_request(addr, host, path, &[]).await?;
    Ok((r.status, r.body))
}

/// An HTTP response as [`http_request`] reads it.
#[derive(Clone, Debug, Default)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 GET with extra request headers.
pub async fn http_request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    http_call(addr, "GET", host, path, headers, "").await
}

/// A minimal HTTP/1.1 POST of `body`: `(status, body)`.
pub async fn http_post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let r = http_call(addr, "POST", "localhost", path, &[], body).await?;
    Ok((r.status, r.body))
}

/// A minimal HTTP/1.1 request (`Connection: close`), bounded to 5 s to
/// connect and 5 s to answer.
pub async fn http_call(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpResponse> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    // Read until the response is complete rather than until the server
    // closes: Envoy holds a connection open for its `delayed_close_timeout`
    // (1 s) after a reply it generated itself, such as a 404, and waiting
    // for that close would add a second to every poll that sees one.
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            raw.extend_from_slice(&buf[..n]);
            if response_complete(&raw) {
                return Ok(());
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out"))??;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Whether `raw` holds a whole HTTP/1.1 response: headers and a body of
/// `Content-Length` bytes, or a chunked body up to its last chunk. Without
/// either, only the server's close ends it.
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

/// Decodes a `Transfer-Encoding: chunked` body.
pub(crate) fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// How an [`HttpBackend`] answers.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// The status of every answer after the first `fail_first` (default 200).
    pub status: u16,
    /// Answer this many requests with 503 first.
    pub fail_first: usize,
    /// Wait this long before each answer.
    pub delay: Duration,
    /// Answer with the name, then the request line and headers, one per
    /// line, instead of the name alone.
    pub echo: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: 200,
            fail_first: 0,
            delay: Duration::ZERO,
            echo: false,
        }
    }
}

/// An HTTP server answering every request with its name; counts hits.
pub struct HttpBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpBackend {
    /// Starts a backend on a free loopback port.
    pub async fn start(name: &str) -> HttpBackend {
        HttpBackend::start_with(name, Behaviour::default()).await
    }

    /// Starts a backend that answers as `behaviour` says.
    pub async fn start_with(name: &str, behaviour: Behaviour) -> HttpBackend {
        let (listener, addr) = crate::peers::loopback_listener().await;
        HttpBackend::serve(name, listener, addr, behaviour)
    }

    /// Starts a backend on `addr`, another loopback address (127.0.0.2 ...)
    /// for instance: two backends on one port, as a pod and a VM would be.
    pub async fn start_at(name: &str, addr: SocketAddr) -> HttpBackend {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap_or(addr);
        HttpBackend::serve(name, listener, addr, Behaviour::default())
    }

    fn serve(
        name: &str,
        listener: tokio::net::TcpListener,
        addr: SocketAddr,
        behaviour: Behaviour,
    ) -> HttpBackend {
        let hits = Arc::new(AtomicUsize::new(0));
        let name = name.to_owned();
        let counter = hits.clone();
        let behaviour = Arc::new(behaviour);
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let name = name.clone();
                let counter = counter.clone();
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut seen = Vec::new();
                    // Serve requests on this connection until it closes.
                    loop {
                        let Ok(n) = conn.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                            seen.drain(..end + 4);
                            let n = counter.fetch_add(1, Ordering::Relaxed);
                            if !behaviour.delay.is_zero() {
                                tokio::time::sleep(behaviour.delay).await;
                            }
                            let status = if n < behaviour.fail_first {
                                503
                            } else {
                                behaviour.status
                            };
                            let body = if behaviour.echo {
                                format!("{name}\n{head}")
                            } else {
                                name.clone()
                            };
                            let resp = format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{}",
                                body.len(),
                                body
                            );
                            if conn.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        HttpBackend { addr, hits, task }
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The etcd binary: `$SEXTANT_ETCD`, else `etcd` on PATH (Debian's
/// `etcd-server`, installed by scripts/install-peers.sh).
pub fn etcd_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SEXTANT_ETCD") {
        return require(PathBuf::from(p), "etcd", "SEXTANT_ETCD");
    }
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    require(
        found.unwrap_or_else(|| PathBuf::from("/usr/bin/etcd")),
        "etcd (Debian package etcd-server)",
        "SEXTANT_ETCD",
    )
}

/// A headless browser: `$SEXTANT_CHROMIUM`, else `chromium` on the PATH
/// (Debian's package; scripts/install-peers.sh installs it).
pub fn chromium_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SEXTANT_CHROMIUM") {
        return require(PathBuf::from(p), "chromium", "SEXTANT_CHROMIUM");
    }
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("chromium"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    require(
        found.unwrap_or_else(|| PathBuf::from("/usr/bin/chromium")),
        "chromium (Debian package chromium)",
        "SEXTANT_CHROMIUM",
    )
}

/// Runs headless Chromium ([`chromium_path`]) with its profile in
/// `profile` and `args` after the usual flags (headless, no sandbox: tests
/// run as root); its output, within 60 s.
pub async fn chromium(profile: &std::path::Path, args: &[String]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(chromium_path())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("chromium did not finish within 60 s"))
    .unwrap_or_else(|e| panic!("cannot run chromium: {e}"))
}

/// A single-member etcd on free loopback ports, killed when dropped. Its data
/// directory survives [`Etcd::stop`], so a restart keeps the data.
pub struct Etcd {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    ports: (u16, u16, u16),
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it is healthy.
    pub async fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ports = (free_port(), free_port(), free_port());
        let mut etcd = Etcd {
            child: None,
            url: format!("http://127.0.0.1:{}", ports.0),
            ports,
            dir,
        };
        etcd.spawn().await;
        etcd
    }

    async fn spawn(&mut self) {
        let (client, peer, metrics) = self.ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap_or_else(|e| panic!("log: {e}"));
        let child = Command::new(etcd_path())
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &self.url,
                "--advertise-client-urls",
                &self.url,
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args(["--initial-cluster", &format!("t=http://127.0.0.1:{peer}")])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{metrics}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd: {e}"));
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], client));
        for _ in 0..200 {
            if let Ok((200, body)) = http_get(addr, "127.0.0.1", "/health").await
                && body.contains("\"health\":\"true\"")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd did not become healthy within 10 s:\n{}", self.log());
    }

    /// etcd's log so far (the tail).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Kills etcd (SIGKILL) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

/// Sends `GET /` with `Host: host` until `done` holds for the set of bodies
/// seen (at most `tries` requests, 50 ms apart); returns that set.
pub async fn bodies_until(
    addr: SocketAddr,
    host: &str,
    tries: usize,
    done: impl Fn(&std::collections::BTreeSet<String>) -> bool,
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..tries {
        if let Ok((200, body)) = http_get(addr, host, "/").await {
            seen.insert(body);
        }
        if done(&seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// Sends `GET /` with `Host: host` until the status is no longer `from`
/// (at most 200 requests, 50 ms apart); returns the last status.
pub async fn status_change(addr: SocketAddr, host: &str, from: u16) -> u16 {
    let mut status = from;
    for _ in 0..200 {
        status = http_get(addr, host, "/").await.map(|r| r.0).unwrap_or(0);
        if status != from {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    status
}
