//! `sextant proxy-config`: what one proxy receives, read over CSDS and
//! decoded into tables.

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::{MAX_ANSWER, REQUEST_TIMEOUT, columns};

/// What `proxy-config` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ConfigKind {
    /// Clusters: type, load balancer, TLS.
    Clusters,
    /// Endpoints of every assignment: address, health, locality, weight.
    Endpoints,
    /// Listeners: address, filter chains.
    Listeners,
    /// Routes: per virtual host, each match and where it goes.
    Routes,
    /// Secrets: a router's gateway certificates (name, version, state;
    /// never their contents). A sidecar's come from its agent.
    Secrets,
}

#[derive(Args)]
pub(crate) struct ProxyConfigArgs {
    /// The proxy's node id (as `sextant status` shows it).
    node: String,
    /// What to show.
    #[arg(value_enum)]
    kind: ConfigKind,
    /// Only the resource (cluster, assignment, listener or route
    /// configuration) of this name.
    #[arg(long)]
    name: Option<String>,
    /// `table` (default) or `json` (name, version and state per resource).
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    /// Sextant's xDS address, HOST:PORT (CSDS is served on both xDS
    /// ports).
    #[arg(long, env = "SEXTANT_XDS_ADDR", default_value = "127.0.0.1:15010")]
    xds_addr: String,
    /// The CA (PEM file) of Sextant's TLS port: connect over TLS (the
    /// mesh's root, `ROOT/root-cert.pem`, when Sextant's CA made the port's
    /// certificate).
    #[arg(long = "xds-ca", env = "SEXTANT_XDS_CA", value_name = "FILE")]
    xds_ca: Option<std::path::PathBuf>,
    /// The name the TLS port's certificate must carry [default: the
    /// address's host].
    #[arg(long, requires = "xds_ca")]
    server_name: Option<String>,
    /// A client certificate and its key (PEM files), for `--xds-auth mtls`.
    #[arg(long, requires_all = ["key", "xds_ca"])]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's key.
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// A bearer token file, when the server authenticates (--xds-auth):
    /// the node must be of the token's namespace.
    #[arg(long, env = "SEXTANT_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
}

/// The node's resources of one type, from CSDS: (name, version, config
/// status, the decoded bytes).
async fn csds_resources(
    args: &ProxyConfigArgs,
    type_url: &str,
) -> Result<Vec<(String, String, String, Vec<u8>)>, String> {
    use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::status::v3::{ClientStatusRequest, ConfigStatus};
    use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher, string_matcher};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let scheme = if args.xds_ca.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", args.xds_addr))
            .map_err(|e| format!("--xds-addr {}: {e}", args.xds_addr))?
            .connect_timeout(REQUEST_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
    if let Some(ca) = &args.xds_ca {
        let host = args.server_name.clone().unwrap_or_else(|| {
            args.xds_addr
                .rsplit_once(':')
                .map_or(args.xds_addr.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        });
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?))
            .domain_name(host);
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS settings: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.xds_addr))?;
    let mut client = ClientStatusDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_ANSWER as usize);
    let mut request = tonic::Request::new(ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(args.node.clone())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    if let Some(path) = &args.token_file {
        let token =
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| format!("{}: not a token", path.display()))?;
        request.metadata_mut().insert("authorization", value);
    }
    let answer = client
        .fetch_client_status(request)
        .await
        .map_err(|s| format!("CSDS at {}: {:?}: {}", args.xds_addr, s.code(), s.message()))?
        .into_inner();
    let Some(config) = answer.config.into_iter().next() else {
        return Err(format!(
            "no proxy {:?} is connected to {} (sextant status lists them)",
            args.node, args.xds_addr
        ));
    };
    Ok(config
        .generic_xds_configs
        .into_iter()
        .filter(|g| g.type_url == type_url)
        .filter(|g| args.name.as_ref().is_none_or(|n| *n == g.name))
        .map(|g| {
            let status = ConfigStatus::try_from(g.config_status)
                .map_or("UNKNOWN", |s| s.as_str_name())
                .to_owned();
            (
                g.name,
                g.version_info,
                status,
                g.xds_config.map(|a| a.value).unwrap_or_default(),
            )
        })
        .collect())
}

fn socket_address(a: Option<&envoy_types::pb::envoy::config::core::v3::Address>) -> String {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    match a.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => match &s.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) => format!("{}:{p}", s.address),
            _ => s.address.clone(),
        },
        Some(address::Address::Pipe(p)) => p.path.clone(),
        _ => "-".to_owned(),
    }
}

/// The table of `resources` (decoded as `kind` says).
fn config_table(kind: ConfigKind, resources: &[(String, String, String, Vec<u8>)]) -> String {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType, LbPolicy,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::{
        RouteConfiguration, route, route_action, route_match,
    };
    use prost::Message;
    let mut rows: Vec<Vec<String>> = Vec::new();
    match kind {
        ConfigKind::Clusters => {
            rows.push(
                ["CLUSTER", "TYPE", "LB", "TLS", "STATUS"]
                    .map(String::from)
                    .to_vec(),
            );
            for (name, _, status, bytes) in resources {
                let Ok(c) = Cluster::decode(bytes.as_slice()) else {
                    continue;
                };
                let kind = match c.cluster_discovery_type {
                    Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t)
                        .map_or("?", |t| t.as_str_name())
                        .to_owned(),
                    Some(ClusterDiscoveryType::ClusterType(t)) => t.name,
                    None => "STATIC".to_owned(),
                };
                let lb = LbPolicy::try_from(c.lb_policy).map_or("?", |l| l.as_str_name());
                let tls = if !c.transport_socket_matches.is_empty() {
                    format!("by endpoint ({} matches)", c.transport_socket_matches.len())
                } else if let Some(ts) = &c.transport_socket {
                    if ts.name.ends_with("raw_buffer") {
                        "plaintext"
                    } else {
                        "tls"
                    }
                    .to_owned()
                } else {
                    "-".to_owned()
                };
                rows.push(vec![name.clone(), kind, lb.to_owned(), tls, status.clone()]);
            }
        }
        ConfigKind::Endpoints => {
            rows.push(
                ["CLUSTER", "ENDPOINT", "HEALTH", "LOCALITY", "WEIGHT"]
                    .map(String::from)
                    .to_vec(),
            );
            for (name, _, _, bytes) in resources {
                let Ok(cla) = ClusterLoadAssignment::decode(bytes.as_slice()) else {
                    continue;
                };
                for group in &cla.endpoints {
                    let locality = group.locality.as_ref().map_or_else(
                        || "-".to_owned(),
                        |l| {
                            let parts: Vec<&str> = [&l.region, &l.zone, &l.sub_zone]
                                .into_iter()
                                .map(String::as_str)
                                .filter(|s| !s.is_empty())
                                .collect();
                            if parts.is_empty() {
                                "-".to_owned()
                            } else {
                                parts.join("/")
                            }
                        },
                    );
                    for lb in &group.lb_endpoints {
                        let addr = match &lb.host_identifier {
                            Some(lb_endpoint::HostIdentifier::Endpoint(e)) => {
                                socket_address(e.address.as_ref())
                            }
                            _ => "-".to_owned(),
                        };
                        let health =
                            envoy_types::pb::envoy::config::core::v3::HealthStatus::try_from(
                                lb.health_status,
                            )
                            .map_or("?", |h| h.as_str_name());
                        rows.push(vec![
                            name.clone(),
                            addr,
                            health.to_owned(),
                            locality.clone(),
                            lb.load_balancing_weight
                                .as_ref()
                                .map_or_else(|| "1".to_owned(), |w| w.value.to_string()),
                        ]);
                    }
                }
            }
        }
        ConfigKind::Listeners => {
            rows.push(
                ["LISTENER", "ADDRESS", "CHAINS", "STATUS"]
                    .map(String::from)
                    .to_vec(),
            );
            for (name, _, status, bytes) in resources {
                let Ok(l) = Listener::decode(bytes.as_slice()) else {
                    continue;
                };
                let chains = if l.api_listener.is_some() {
                    "api listener (proxyless gRPC)".to_owned()
                } else {
                    let names: Vec<&str> = l
                        .filter_chains
                        .iter()
                        .map(|c| {
                            if c.name.is_empty() {
                                "(unnamed)"
                            } else {
                                c.name.as_str()
                            }
                        })
                        .collect();
                    format!("{}: {}", names.len(), names.join(", "))
                };
                rows.push(vec![
                    name.clone(),
                    socket_address(l.address.as_ref()),
                    chains,
                    status.clone(),
                ]);
            }
        }
        ConfigKind::Routes => {
            rows.push(
                [
                    "ROUTE CONFIG",
                    "VIRTUAL HOST",
                    "DOMAINS",
                    "MATCH",
                    "DESTINATION",
                ]
                .map(String::from)
                .to_vec(),
            );
            for (name, _, _, bytes) in resources {
                let Ok(rc) = RouteConfiguration::decode(bytes.as_slice()) else {
                    continue;
                };
                for vh in &rc.virtual_hosts {
                    for r in &vh.routes {
                        let m = r.r#match.as_ref();
                        let mut matched = match m.and_then(|m| m.path_specifier.as_ref()) {
                            Some(route_match::PathSpecifier::Prefix(p)) => format!("prefix {p}"),
                            Some(route_match::PathSpecifier::Path(p)) => format!("path {p}"),
                            Some(route_match::PathSpecifier::SafeRegex(r)) => {
                                format!("regex {}", r.regex)
                            }
                            _ => "*".to_owned(),
                        };
                        let headers = m.map_or(0, |m| m.headers.len());
                        if headers > 0 {
                            matched.push_str(&format!(" + {headers} header(s)"));
                        }
                        let to = match &r.action {
                            Some(route::Action::Route(a)) => match &a.cluster_specifier {
                                Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
                                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w
                                    .clusters
                                    .iter()
                                    .map(|c| {
                                        format!(
                                            "{} {}",
                                            c.name,
                                            c.weight.as_ref().map_or(0, |w| w.value)
                                        )
                                    })
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                _ => "?".to_owned(),
                            },
                            Some(route::Action::DirectResponse(d)) => {
                                format!("direct {}", d.status)
                            }
                            Some(route::Action::Redirect(_)) => "redirect".to_owned(),
                            _ => "-".to_owned(),
                        };
                        rows.push(vec![
                            name.clone(),
                            vh.name.clone(),
                            vh.domains.join(","),
                            matched,
                            to,
                        ]);
                    }
                }
            }
        }
        ConfigKind::Secrets => {
            rows.push(["SECRET", "VERSION", "STATUS"].map(String::from).to_vec());
            for (name, version, status, _) in resources {
                rows.push(vec![name.clone(), version.clone(), status.clone()]);
            }
        }
    }
    columns(&rows)
}

pub(crate) fn proxy_config(args: &ProxyConfigArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let type_url = match args.kind {
        ConfigKind::Clusters => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        ConfigKind::Endpoints => {
            "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
        }
        ConfigKind::Listeners => "type.googleapis.com/envoy.config.listener.v3.Listener",
        ConfigKind::Routes => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        ConfigKind::Secrets => {
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
        }
    };
    let resources = match runtime.block_on(csds_resources(args, type_url)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.kind == ConfigKind::Secrets && resources.is_empty() {
        println!(
            "No secrets from Sextant: a router receives its gateway's certificates (named NAMESPACE/NAME); a sidecar's certificate and the mesh's root come from its agent over SDS (names `default` and `ROOTCA`), see the agent's /metrics for the certificate's expiry."
        );
        return ExitCode::SUCCESS;
    }
    if args.output == "json" {
        let rows: Vec<Value> = resources
            .iter()
            .map(|(name, version, status, _)| {
                serde_json::json!({ "name": name, "version": version, "status": status })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        print!("{}", config_table(args.kind, &resources));
    }
    ExitCode::SUCCESS
}
