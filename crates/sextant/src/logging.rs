//! Logging: Pilot's `--log-output-level default:info,xds:debug`, or RUST_LOG.

/// Scope names and the crates (tracing targets) they cover.
pub const SCOPES: [(&str, &str); 8] = [
    ("core", "sextant_core"),
    ("aggregate", "sextant_aggregate"),
    ("xds", "sextant_xds"),
    ("file", "sextant_file"),
    ("etcd", "sextant_etcd"),
    ("consul", "sextant_consul"),
    ("k8s", "sextant_k8s"),
    ("admin", "sextant"),
];

fn level(s: &str) -> Option<&'static str> {
    Some(match s {
        "none" | "off" => "off",
        "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => return None,
    })
}

/// Turns `default:info,xds:debug` into tracing directives.
pub fn directives(spec: &str) -> Result<String, String> {
    let mut default = "info";
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scope, lvl) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?} should be SCOPE:LEVEL, e.g. xds:debug"))?;
        let lvl = level(lvl).ok_or_else(|| {
            format!("unknown level {lvl:?}; levels: none, error, warn, info, debug, trace")
        })?;
        if scope == "default" {
            default = lvl;
            continue;
        }
        let target = SCOPES
            .iter()
            .find(|(s, _)| *s == scope)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let known: Vec<&str> = std::iter::once("default")
                    .chain(SCOPES.iter().map(|(s, _)| *s))
                    .collect();
                format!("unknown scope {scope:?}; scopes: {}", known.join(", "))
            })?;
        out.push(format!("{target}={lvl}"));
    }
    out.insert(0, default.to_owned());
    Ok(out.join(","))
}

/// Installs the global subscriber: RUST_LOG if set, else `spec`.
pub fn init(spec: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            tracing_subscriber::EnvFilter::try_new(v).map_err(|e| format!("RUST_LOG: {e}"))?
        }
        _ => {
            tracing_subscriber::EnvFilter::try_new(directives(spec)?).map_err(|e| e.to_string())?
        }
    };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pilot_syntax_maps_to_targets() {
        assert_eq!(
            directives("default:info,xds:debug").as_deref(),
            Ok("info,sextant_xds=debug")
        );
        assert_eq!(directives("default:none").as_deref(), Ok("off"));
        assert_eq!(
            directives("aggregate:warn").as_deref(),
            Ok("info,sextant_aggregate=warn")
        );
        assert!(directives("xds").unwrap_err().contains("SCOPE:LEVEL"));
        assert!(
            directives("pilot:debug")
                .unwrap_err()
                .contains("unknown scope \"pilot\"")
        );
        assert!(
            directives("xds:loud")
                .unwrap_err()
                .contains("unknown level")
        );
    }
}
