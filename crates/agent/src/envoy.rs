//! Envoy as a child process: started from the bootstrap, its logs on the
//! agent's own output, its admin address learnt from the file Envoy writes,
//! stopped through its admin API (and killed if it does not go).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::AgentArgs;

/// How long Envoy may take to open its admin port.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long Envoy may take to exit once asked.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why Envoy did not start.
#[derive(Debug)]
pub enum StartError {
    /// It could not be run at all (no such binary): trying again will not
    /// help.
    Spawn(String),
    /// It ran and exited, or never opened its admin port: counted as an
    /// unexpected exit, and tried again.
    Failed(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Spawn(e) | StartError::Failed(e) => f.write_str(e),
        }
    }
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    /// Its admin address.
    pub admin: SocketAddr,
}

impl Envoy {
    /// Starts Envoy on `bootstrap`; returns once its admin port is known.
    pub async fn start(args: &AgentArgs, bootstrap: &Path) -> Result<Envoy, StartError> {
        let admin_file = args.proxy_dir.join("admin-address");
        let _ = std::fs::remove_file(&admin_file);
        let deadline_s = args.drain_deadline.as_secs().max(1).to_string();
        let mut child = Command::new(&args.envoy_path)
            .arg("-c")
            .arg(bootstrap)
            .args(["--concurrency", &args.concurrency.max(1).to_string()])
            .args(["--log-level", &args.proxy_log_level])
            // The agent restarts Envoy itself: no hot restart, so no
            // shared memory or domain socket to collide with.
            .arg("--disable-hot-restart")
            // During a drain every response asks its connection to close,
            // at once rather than gradually over the drain time.
            .args([
                "--drain-strategy",
                "immediate",
                "--drain-time-s",
                &deadline_s,
            ])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                StartError::Spawn(format!(
                    "cannot start Envoy ({}): {e}; set --envoy-path",
                    args.envoy_path.display()
                ))
            })?;
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&admin_file)
                && let Ok(admin) = text.trim().parse()
            {
                tracing::info!(pid = child.id(), %admin, "Envoy started");
                return Ok(Envoy { child, admin });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StartError::Failed(format!(
                    "Envoy exited at start ({status}); its log says why"
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.start_kill();
                return Err(StartError::Failed(format!(
                    "Envoy did not open its admin port within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for it to exit; how it exited.
    pub async fn wait(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => format!("cannot wait for it: {e}"),
        }
    }

    /// Asks it to exit (its admin's `/quitquitquit`), kills it if it has
    /// not within [`STOP_TIMEOUT`].
    pub async fn stop(&mut self) {
        let _ = crate::admin::call(self.admin, "POST", "/quitquitquit").await;
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("Envoy did not exit when asked; killing it");
            let _ = self.child.kill().await;
        }
    }
}
