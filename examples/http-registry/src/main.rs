//! Runs Sextant with the HTTP inventory registry:
//!
//! ```text
//! cargo run -p sextant-example-http-registry -- http://127.0.0.1:8000/inventory.json
//! ```

use std::time::Duration;

use sextant::Sextant;
use sextant_example_http_registry::HttpRegistry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8000/inventory.json".into());
    // Without this the process is silent: Sextant logs through `tracing`.
    sextant::logging::init("default:info").map_err(anyhow::Error::msg)?;
    let running = Sextant::new()
        .registry(HttpRegistry::new("inventory", url, Duration::from_secs(5)))
        .start()
        .await?;
    running.run_until_signal().await;
    Ok(())
}
