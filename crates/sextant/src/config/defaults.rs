//! Each setting's default is written once, where the setting lives: in the
//! library (`sextant::DEFAULT_XDS_ADDR`, [`ServerConfig::default`],
//! [`Debounce::default`], the adapters' configs). `Settings::resolve`
//! falls back to those values, and [`annotate`] adds them to the flags'
//! help, so that `--help` cannot drift from what runs.

use sextant_aggregate::AggregatorConfig;
use sextant_consul::ConsulConfig;
use sextant_etcd::EtcdConfig;
use sextant_k8s::K8sConfig;
use sextant_xds::{Debounce, ServerConfig, TranslateOptions};

/// The log level used when none is given.
pub const LOG_OUTPUT_LEVEL: &str = "default:info";

/// A duration as the flags take it (`100ms`, `30s`).
fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A size as the flags take it.
fn size(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}MiB", bytes >> 20)
    } else if bytes.is_multiple_of(1 << 10) {
        format!("{}KiB", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

/// Each flag (by its argument id) whose default is a value of the library,
/// with that value as `--help` shows it.
pub fn shown() -> Vec<(&'static str, String)> {
    let server = ServerConfig::default();
    let debounce = Debounce::default();
    let consul = ConsulConfig::default();
    let etcd = EtcdConfig::default();
    let k8s = K8sConfig::default();
    vec![
        ("xds_addr", crate::DEFAULT_XDS_ADDR.to_string()),
        (
            "xds_tls_addr",
            format!(
                "off; {} when a certificate is set",
                crate::DEFAULT_XDS_TLS_ADDR
            ),
        ),
        ("admin_addr", crate::DEFAULT_ADMIN_ADDR.to_string()),
        ("xds_max_request_size", size(server.max_request_bytes)),
        ("xds_handshake_timeout", duration(server.handshake_timeout)),
        (
            "outbound_addr",
            TranslateOptions::default().outbound_addr.to_string(),
        ),
        ("scope_root_namespace", server.scoping.root_namespace),
        (
            "startup_timeout",
            duration(AggregatorConfig::default().startup_timeout),
        ),
        ("drain_timeout", duration(crate::DEFAULT_DRAIN_TIMEOUT)),
        (
            "workload_entry_grace",
            duration(sextant_xds::server::register::DEFAULT_GRACE),
        ),
        ("log_output_level", LOG_OUTPUT_LEVEL.to_owned()),
        ("debounce_endpoints", duration(debounce.endpoints)),
        ("debounce_config", duration(debounce.config)),
        ("debounce_max", duration(debounce.max_delay)),
        ("consul_addr", consul.addr),
        ("consul_hostname_template", consul.mapping.hostname_template),
        ("etcd_endpoints", etcd.endpoints.join(",")),
        ("etcd_prefix", etcd.prefix),
        ("cluster_domain", k8s.mapping.cluster_domain),
        ("k8s_controller_name", k8s.controller_name),
        ("gateway_class", k8s.gateway_class),
        ("ingress_class", k8s.ingress_class),
        ("ingress_gateway", k8s.ingress_gateway),
        (
            "k8s_injection_label",
            sextant_inject::audit::DEFAULT_LABEL.to_owned(),
        ),
        (
            "k8s_injection_audit_every",
            duration(sextant_inject::audit::DEFAULT_EVERY),
        ),
    ]
}

/// `cmd` (and its subcommands') flags with their library defaults in
/// their help.
pub fn annotate(cmd: clap::Command) -> clap::Command {
    let shown = shown();
    let mut cmd = cmd;
    for (id, value) in &shown {
        // An argument with a default of its own (another command's flag
        // of the same name) shows that one.
        if cmd
            .get_arguments()
            .any(|a| a.get_id() == *id && a.get_default_values().is_empty())
        {
            cmd = cmd.mut_arg(*id, |a| {
                let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                let long = a.get_long_help().map(ToString::to_string);
                let a = a.help(format!("{help} [default: {value}]"));
                match long {
                    Some(long) => a.long_help(format!("{long}\n[default: {value}]")),
                    None => a,
                }
            });
        }
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, annotate);
    }
    cmd
}
