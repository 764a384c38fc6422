//! The pod side's commands: `sextant agent` (and `agent wait`), `sextant
//! inject` and `sextant webhook` (and `webhook certs`), with their flags.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::runtime;

/// Where the template comes from and how native sidecars are decided.
#[derive(Args)]
struct TemplateArgs {
    /// The injection template (YAML; every field has a default).
    #[arg(long, env = "SEXTANT_INJECTION_TEMPLATE", value_name = "FILE")]
    template: Option<std::path::PathBuf>,
    /// Native sidecars: auto (from the API server's version), always or
    /// never [default: the template's nativeSidecars].
    #[arg(long, value_name = "auto|always|never")]
    native_sidecars: Option<String>,
    /// The cluster to ask (its version; for --audit, its pods), as kubectl
    /// finds it [default: KUBECONFIG, ~/.kube/config, in-cluster].
    #[arg(long, env = "SEXTANT_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub(crate) struct InjectArgs {
    /// The manifests (multi-document YAML); `-` reads stdin.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        required_unless_present = "audit"
    )]
    file: Option<String>,
    /// List the pods that should have the current proxy and have not.
    #[arg(long, conflicts_with = "file")]
    audit: bool,
    /// The namespace label that switches injection on (value `enabled`).
    #[arg(
        long,
        env = "SEXTANT_INJECTION_LABEL",
        default_value = "sextant-injection"
    )]
    injection_label: String,
    #[command(flatten)]
    template: TemplateArgs,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct WebhookCli {
    #[command(subcommand)]
    command: Option<WebhookCommand>,
    #[command(flatten)]
    run: WebhookArgs,
}

#[derive(Args)]
struct WebhookArgs {
    /// Where to listen (pods: 0.0.0.0:15017).
    #[arg(long, env = "SEXTANT_WEBHOOK_ADDR", default_value = "127.0.0.1:15017")]
    addr: std::net::SocketAddr,
    /// The serving certificate (PEM), re-read when it changes.
    #[arg(
        long,
        env = "SEXTANT_WEBHOOK_CERT",
        value_name = "FILE",
        required = true
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// Its key (PEM).
    #[arg(
        long,
        env = "SEXTANT_WEBHOOK_KEY",
        value_name = "FILE",
        required = true
    )]
    tls_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    template: TemplateArgs,
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Make a CA and the webhook's serving certificate (ca.crt, tls.crt,
    /// tls.key) and print the caBundle for the MutatingWebhookConfiguration.
    Certs(CertsArgs),
}

#[derive(Args)]
struct CertsArgs {
    /// The webhook's Service name.
    #[arg(long, default_value = "sextant-webhook")]
    service: String,
    /// Its namespace.
    #[arg(long, default_value = "sextant")]
    namespace: String,
    /// Also name these IPs (for a webhook reached by address).
    #[arg(long = "ip", value_delimiter = ',')]
    ips: Vec<std::net::IpAddr>,
    /// Where to write the files.
    #[arg(long, value_name = "DIR")]
    out: std::path::PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AgentCli {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    run: sextant_agent::AgentArgs,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Wait until the agent is ready (a postStart hook: the application
    /// starts after its proxy).
    Wait(WaitArgs),
}

#[derive(Args)]
struct WaitArgs {
    /// The agent's status address.
    #[arg(long, env = "SEXTANT_STATUS_ADDR", default_value = "127.0.0.1:15021")]
    status_addr: std::net::SocketAddr,
    /// Fail after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

pub(crate) fn agent(cli: AgentCli) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match cli.command {
        Some(AgentCommand::Wait(w)) => {
            match runtime.block_on(sextant_agent::wait(w.status_addr, w.timeout)) {
                Ok(after) => {
                    eprintln!("the proxy is ready (waited {after:?})");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            if let Err(e) = sextant::logging::init("default:info") {
                eprintln!("error: logging: {e}");
            }
            match runtime.block_on(sextant_agent::run(cli.run)) {
                sextant_agent::Exit::Stopped => ExitCode::SUCCESS,
                sextant_agent::Exit::Failed(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A client for the cluster the template flags name.
async fn kube_client(t: &TemplateArgs) -> Result<kube::Client, String> {
    let config = sextant_k8s::K8sConfig {
        kubeconfig: t.kubeconfig.clone(),
        ..Default::default()
    };
    let client_config = sextant_k8s::client_config(&config)
        .await
        .map_err(|e| e.chain())?;
    kube::Client::try_from(client_config).map_err(|e| format!("Kubernetes client: {e}"))
}

/// The template and whether the proxy is a native sidecar; a template
/// that does not load is reported, and the command fails.
async fn template(t: &TemplateArgs) -> Result<(sextant_inject::Template, bool), ExitCode> {
    load_template(t).await.map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

async fn load_template(t: &TemplateArgs) -> Result<(sextant_inject::Template, bool), String> {
    use sextant_inject::template::NativeSidecars;
    let template = match &t.template {
        Some(path) => sextant_inject::Template::load(path)?,
        None => sextant_inject::Template::default(),
    };
    let native = match t.native_sidecars.as_deref() {
        Some("always") => NativeSidecars::Always,
        Some("never") => NativeSidecars::Never,
        Some("auto") => NativeSidecars::Auto,
        Some(other) => {
            return Err(format!(
                "--native-sidecars {other:?}: auto, always or never"
            ));
        }
        None => template.native_sidecars,
    };
    let native = match native {
        NativeSidecars::Always => true,
        NativeSidecars::Never => false,
        NativeSidecars::Auto => {
            let asked = match kube_client(t).await {
                Ok(client) => {
                    sextant_inject::webhook::api_server_has_native_sidecars(&client).await
                }
                Err(e) => Err(e),
            };
            match asked {
                Ok(native) => native,
                Err(e) => {
                    eprintln!(
                        "note: native sidecars off: {e} (--native-sidecars always|never decides)"
                    );
                    false
                }
            }
        }
    };
    Ok((template, native))
}

pub(crate) fn inject(a: &InjectArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let (template, native) = match template(&a.template).await {
            Ok(t) => t,
            Err(code) => return code,
        };
        if a.audit {
            let client = match kube_client(&a.template).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            return match sextant_inject::audit::audit(&client, &a.injection_label, &template.hash())
                .await
            {
                Ok(escaped) if escaped.is_empty() => {
                    println!("every pod that should have the current proxy has it");
                    ExitCode::SUCCESS
                }
                Ok(escaped) => {
                    println!("NAMESPACE\tPOD\tPROBLEM");
                    for e in &escaped {
                        println!("{}\t{}\t{}", e.namespace, e.name, e.state);
                    }
                    eprintln!(
                        "{} pod(s) outside the mesh or on an older template",
                        escaped.len()
                    );
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        let file = a.file.as_deref().unwrap_or("-");
        let text = if file == "-" {
            let mut s = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
                Ok(_) => s,
                Err(e) => {
                    eprintln!("error: reading stdin: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            match std::fs::read_to_string(file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: cannot read {file}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        };
        match sextant_inject::manifest::inject_manifests(&text, &template, native) {
            Ok(out) => {
                print!("{}", out.text);
                for r in &out.reports {
                    match &r.outcome {
                        sextant_inject::Outcome::Injected => eprintln!("{}: injected", r.object),
                        sextant_inject::Outcome::Skipped(why) => eprintln!("{}: {why}", r.object),
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {file}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

pub(crate) fn webhook(cli: WebhookCli) -> ExitCode {
    if let Some(WebhookCommand::Certs(c)) = cli.command {
        return match sextant_inject::certs::generate(
            &c.out,
            &c.service,
            &c.namespace,
            &c.ips,
            c.days,
        ) {
            Ok(w) => {
                eprintln!(
                    "wrote {}, {} and {}; the caBundle for the MutatingWebhookConfiguration:",
                    w.ca.display(),
                    w.cert.display(),
                    w.key.display()
                );
                println!("{}", w.ca_bundle);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let a = cli.run;
    if let Err(e) = sextant::logging::init("default:info") {
        eprintln!("error: logging: {e}");
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let (template, native) = match template(&a.template).await {
            Ok(t) => t,
            Err(code) => return code,
        };
        let listener = match tokio::net::TcpListener::bind(a.addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", a.addr);
                return ExitCode::FAILURE;
            }
        };
        let files = sextant_inject::webhook::CertFiles {
            cert: a.tls_cert.clone().unwrap_or_default(),
            key: a.tls_key.clone().unwrap_or_default(),
        };
        tokio::select! {
            served = sextant_inject::webhook::serve(listener, files, template, native) => match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            () = sextant::wait_for_signal() => ExitCode::SUCCESS,
        }
    })
}
