use super::*;

fn args() -> RunArgs {
    RunArgs::default()
}

/// A settings file holding `text`, in a directory of its own (removed with
/// the returned guard).
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sextant.yaml");
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

/// The settings from the file at `path` and no flags.
fn resolve_file(path: &Path) -> Result<Settings, Problems> {
    Settings::resolve(&RunArgs {
        config: Some(path.to_owned()),
        ..args()
    })
}

#[test]
fn files_alone_mean_the_file_registry_with_pilot_defaults() {
    let s = Settings::resolve(&RunArgs {
        files: vec!["x.yaml".into()],
        ..args()
    })
    .expect("valid");
    assert_eq!(s.registries, [RegistryKind::File]);
    assert_eq!(s.xds_addr.expect("on").to_string(), "127.0.0.1:15010");
    assert_eq!(s.admin_addr.to_string(), "127.0.0.1:15014");
    assert_eq!(s.translate.outbound_addr.to_string(), "127.0.0.1:15001");
    assert_eq!(s.debounce, Debounce::default());
}

#[test]
fn nothing_to_serve_is_explained() {
    let e = Settings::resolve(&args()).expect_err("nothing");
    assert!(e.0[0].contains("pass --file PATH"), "{e}");
}

#[test]
fn unknown_registry_kinds_list_the_known_ones_and_every_problem_is_reported() {
    let e = Settings::resolve(&RunArgs {
        registries: Some(vec!["file".into(), "zookeeper".into()]),
        max_stale: Some("soon".into()),
        merge: Some("both".into()),
        ..args()
    })
    .expect_err("invalid");
    let text = e.to_string();
    assert!(
        text.contains("unknown registry kind \"zookeeper\"; known kinds: file, etcd, consul, k8s"),
        "{text}"
    );
    assert!(
        text.contains("--max-stale: \"soon\" is not a duration"),
        "{text}"
    );
    assert!(text.contains("--merge: unknown merge mode"), "{text}");
    assert!(
        text.contains("the file registry needs at least one --file PATH"),
        "{text}"
    );
    assert_eq!(e.0.len(), 4, "{text}");
}

#[test]
fn k8s_defaults_to_one_cluster_and_contexts_make_one_registry_each() {
    let k8s = |k: K8sArgs| {
        Settings::resolve(&RunArgs {
            registries: Some(vec!["k8s".into()]),
            k8s: k,
            ..args()
        })
    };
    let s = k8s(K8sArgs::default()).expect("valid");
    assert_eq!(s.k8s.len(), 1);
    assert_eq!(s.k8s[0].cluster_id, "Kubernetes");
    assert_eq!(s.k8s[0].mapping.cluster_domain, "cluster.local");
    assert!(s.k8s[0].namespaces.is_empty() && s.k8s[0].watch_nodes);
    let ids: Vec<String> = s
        .build_registries()
        .iter()
        .map(|r| r.id().to_string())
        .collect();
    // Each cluster's ServiceEntries are a registry right after its own.
    assert_eq!(ids, ["k8s/Kubernetes", "k8s/Kubernetes/entries"]);

    let s = k8s(K8sArgs {
        k8s_context: Some(vec!["east".into(), "west".into()]),
        k8s_namespaces: Some(vec!["shop".into(), "ops".into()]),
        cluster_domain: Some("corp.internal.".into()),
        k8s_skip_nodes: true,
        ..Default::default()
    })
    .expect("valid");
    let got: Vec<(Option<&str>, &str)> = s
        .k8s
        .iter()
        .map(|c| (c.context.as_deref(), c.cluster_id.as_str()))
        .collect();
    assert_eq!(got, [(Some("east"), "east"), (Some("west"), "west")]);
    assert_eq!(s.k8s[1].namespaces, ["shop", "ops"]);
    assert_eq!(s.k8s[1].mapping.cluster_domain, "corp.internal");
    assert!(!s.k8s[1].watch_nodes);
    let ids: Vec<String> = s
        .build_registries()
        .iter()
        .map(|r| r.id().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "k8s/east",
            "k8s/east/entries",
            "k8s/west",
            "k8s/west/entries"
        ]
    );
}

#[test]
fn k8s_problems_are_reported_together() {
    let e = Settings::resolve(&RunArgs {
        registries: Some(vec!["k8s".into()]),
        k8s: K8sArgs {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            k8s_context: Some(vec!["a".into(), "b".into()]),
            k8s_cluster_id: Some(vec!["one".into()]),
            k8s_namespaces: Some(vec!["Shop_1".into()]),
            ..Default::default()
        },
        ..args()
    })
    .expect_err("invalid");
    let text = e.to_string();
    assert!(
        text.contains("--kubeconfig: /nonexistent/kubeconfig does not exist"),
        "{text}"
    );
    assert!(
        text.contains("--k8s-cluster-id: 1 ids for 2 contexts"),
        "{text}"
    );
    assert!(text.contains("--k8s-namespaces: \"Shop_1\""), "{text}");
    assert_eq!(e.0.len(), 3, "{text}");
}

#[test]
fn the_k8s_section_of_the_config_file_is_read() {
    let (_dir, path) = config_file(
        "registries: [k8s]\nk8s:\n  contexts: [prod]\n  cluster_ids: [eu-1]\n  label_selector: mesh=on\n",
    );
    let s = resolve_file(&path).expect("valid");
    assert_eq!(s.k8s[0].context.as_deref(), Some("prod"));
    assert_eq!(s.k8s[0].cluster_id, "eu-1");
    assert_eq!(s.k8s[0].label_selector.as_deref(), Some("mesh=on"));
}

#[test]
fn the_config_file_is_read_relative_to_itself_and_flags_win() {
    let (dir, path) = config_file(
        "registries: [file]\nfiles: [mesh.yaml]\nxds_addr: 127.0.0.1:25010\nmerge: first\ndebounce: { endpoints: 5ms }\nmax_stale: 10m\n",
    );
    let s = resolve_file(&path).expect("valid");
    assert_eq!(s.files, [dir.path().join("mesh.yaml")]);
    assert_eq!(s.xds_addr.expect("on").port(), 25010);
    assert_eq!(s.aggregator.merge, MergeMode::First);
    assert_eq!(s.debounce.endpoints, Duration::from_millis(5));
    assert_eq!(s.aggregator.max_stale, Some(Duration::from_secs(600)));
    let s = Settings::resolve(&RunArgs {
        config: Some(path),
        xds_addr: Some("127.0.0.1:35010".into()),
        ..args()
    })
    .expect("valid");
    assert_eq!(s.xds_addr.expect("on").port(), 35010, "flags win");
}

#[test]
fn config_file_problems_name_file_and_line() {
    let (_dir, path) = config_file("files: [mesh.yaml]\nmax_stale: forever\nxds_addr: localhost\n");
    let e = resolve_file(&path).expect_err("invalid");
    let p = path.display().to_string();
    assert!(
        e.0.iter()
            .any(|m| m.starts_with(&format!("{p}:2: max_stale: \"forever\" is not a duration"))),
        "{e}"
    );
    assert!(
        e.0.iter()
            .any(|m| m.starts_with(&format!("{p}:3: xds_addr:"))),
        "{e}"
    );

    std::fs::write(&path, "files: [mesh.yaml]\nregistrys: [file]\n").expect("write");
    let e = resolve_file(&path).expect_err("typo");
    assert!(
        e.0[0].contains(":2:") && e.0[0].contains("unknown field `registrys`"),
        "{e}"
    );
}

#[test]
fn etcd_settings_from_flags_and_file() {
    let s = Settings::resolve(&RunArgs {
        registries: Some(vec!["etcd".into()]),
        etcd: EtcdArgs {
            etcd_endpoints: Some(vec!["http://10.0.0.1:2379".into()]),
            ..Default::default()
        },
        ..args()
    })
    .expect("valid");
    assert_eq!(s.etcd.endpoints, ["http://10.0.0.1:2379"]);
    assert_eq!(s.etcd.prefix, "/sextant/");
    assert_eq!(s.build_registries().len(), 1);

    let e = Settings::resolve(&RunArgs {
        registries: Some(vec!["etcd".into()]),
        etcd: EtcdArgs {
            etcd_endpoints: Some(vec!["10.0.0.1:2379".into()]),
            etcd_username: Some("u".into()),
            etcd_cert: Some("c.pem".into()),
            ..Default::default()
        },
        ..args()
    })
    .expect_err("invalid");
    assert_eq!(e.0.len(), 3, "{e}");

    let (_dir, path) = config_file(
        "registries: [etcd]\netcd: { endpoints: [\"http://127.0.0.1:1\"], prefix: /mesh/ }\n",
    );
    let s = resolve_file(&path).expect("valid");
    assert_eq!(
        (s.etcd.endpoints[0].as_str(), s.etcd.prefix.as_str()),
        ("http://127.0.0.1:1", "/mesh/")
    );
}

#[test]
fn consul_settings_follow_consuls_conventions() {
    let s = Settings::resolve(&RunArgs {
        registries: Some(vec!["consul".into()]),
        consul: ConsulArgs {
            consul_addr: Some("127.0.0.1:8500".into()),
            consul_hostname_template: Some("{service}.default.svc.cluster.local".into()),
            consul_warning_unhealthy: true,
            ..Default::default()
        },
        ..args()
    })
    .expect("valid");
    assert_eq!(
        s.consul.addr, "http://127.0.0.1:8500",
        "a bare host:port gets a scheme"
    );
    assert_eq!(
        s.consul.mapping.hostname_template,
        "{service}.default.svc.cluster.local"
    );
    assert!(!s.consul.mapping.warning_is_healthy);
    let regs = s.build_registries();
    assert_eq!(regs[0].id().as_str(), "consul/main");

    let e = Settings::resolve(&RunArgs {
        registries: Some(vec!["consul".into()]),
        consul: ConsulArgs {
            consul_hostname_template: Some("svc.Consul".into()),
            consul_client_cert: Some("c.pem".into()),
            ..Default::default()
        },
        ..args()
    })
    .expect_err("invalid");
    assert_eq!(e.0.len(), 2, "{e}");
}

/// Every path in the config file is relative to the file, wherever the
/// process runs: registry files, etcd and Consul certificates, kubeconfig.
/// A flag's path stays relative to the working directory.
#[test]
fn every_path_in_the_config_file_is_relative_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("kube")).expect("mkdir");
    std::fs::write(dir.path().join("kube/config"), "").expect("write");
    let path = dir.path().join("sextant.yaml");
    std::fs::write(
        &path,
        "registries: [file, etcd, consul, k8s]\n\
         files: [mesh.yaml]\n\
         etcd:\n  endpoints: [\"https://127.0.0.1:2379\"]\n  ca: certs/etcd-ca.pem\n  cert: certs/etcd.pem\n  key: certs/etcd-key.pem\n\
         consul:\n  cacert: certs/consul-ca.pem\n  client_cert: certs/consul.pem\n  client_key: certs/consul-key.pem\n\
         k8s:\n  kubeconfig: kube/config\n",
    )
    .expect("write");
    let s = resolve_file(&path).expect("valid");
    let d = dir.path();
    assert_eq!(s.files, [d.join("mesh.yaml")]);
    let tls = s.etcd.tls.as_ref().expect("etcd tls");
    assert_eq!(
        tls.ca.as_deref(),
        Some(d.join("certs/etcd-ca.pem").as_path())
    );
    assert_eq!(
        tls.cert.as_deref(),
        Some(d.join("certs/etcd.pem").as_path())
    );
    assert_eq!(
        tls.key.as_deref(),
        Some(d.join("certs/etcd-key.pem").as_path())
    );
    assert_eq!(
        s.consul.ca.as_deref(),
        Some(d.join("certs/consul-ca.pem").as_path())
    );
    assert_eq!(
        s.consul.client_cert,
        Some((d.join("certs/consul.pem"), d.join("certs/consul-key.pem")))
    );
    assert_eq!(
        s.k8s[0].kubeconfig.as_deref(),
        Some(d.join("kube/config").as_path())
    );

    // A flag's path is the user's, relative to where they run it.
    let s = Settings::resolve(&RunArgs {
        config: Some(path),
        etcd: EtcdArgs {
            etcd_ca: Some("mine.pem".into()),
            ..Default::default()
        },
        ..args()
    })
    .expect("valid");
    let tls = s.etcd.tls.as_ref().expect("etcd tls");
    assert_eq!(tls.ca.as_deref(), Some(Path::new("mine.pem")));
}

/// A bad value from the file is reported with the file, the line and the
/// key the user wrote, nested keys included, in block and flow style; the
/// same value from a flag is reported under the flag.
#[test]
fn problems_in_the_file_name_the_file_line_and_key_written() {
    let (_dir, path) = config_file(
        "registries: [etcd, consul, k8s]\n\
         debounce:\n  config: 5ms\n  endpoints: soon\n\
         etcd: { prefix: /x/, endpoints: [\"127.0.0.1:2379\"] }\n\
         consul:\n  addr: \"ftp://nowhere\"\n  client_cert: c.pem\n\
         k8s:\n  namespaces: [Shop_1]\n  cluster_domain: \"bad domain\"\n",
    );
    let e = resolve_file(&path).expect_err("invalid");
    let p = path.display().to_string();
    for (line, key) in [
        (4, "debounce.endpoints"),
        (5, "etcd.endpoints"),
        (7, "consul.addr"),
        (8, "consul.client_cert"),
        (10, "k8s.namespaces"),
        (11, "k8s.cluster_domain"),
    ] {
        let want = format!("{p}:{line}: {key}: ");
        assert!(
            e.0.iter().any(|m| m.starts_with(&want)),
            "no {want:?} in\n{e}"
        );
    }
    assert_eq!(e.0.len(), 6, "{e}");
    assert!(
        e.0.iter().all(|m| !m.starts_with("--")),
        "no flag was given: {e}"
    );

    // The same mistakes as flags are reported under the flags.
    let e = Settings::resolve(&RunArgs {
        registries: Some(vec!["etcd".into()]),
        debounce: DebounceArgs {
            endpoints: Some("soon".into()),
            ..Default::default()
        },
        etcd: EtcdArgs {
            etcd_endpoints: Some(vec!["127.0.0.1:2379".into()]),
            ..Default::default()
        },
        ..args()
    })
    .expect_err("invalid");
    assert!(
        e.0.iter().any(|m| m.starts_with("--debounce-endpoints: ")),
        "{e}"
    );
    assert!(
        e.0.iter().any(|m| m.starts_with("--etcd-endpoints: ")),
        "{e}"
    );
}

/// The flags, their environment variables and the file share one struct:
/// clap's own checks of the definition (unique ids and names) pass, and a
/// flag and the file key of the same setting land in the same field.
#[test]
fn one_struct_declares_each_flag_and_file_key() {
    use clap::{CommandFactory, Parser};
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }
    Cli::command().debug_assert();
    let cli = Cli::parse_from([
        "sextant",
        "--debounce-config",
        "5ms",
        "--etcd-endpoints",
        "http://a:1",
        "--config",
        "x.yaml",
    ]);
    assert_eq!(cli.run.debounce.config.as_deref(), Some("5ms"));
    assert_eq!(cli.run.config.as_deref(), Some(Path::new("x.yaml")));
    let file: RunArgs = serde_yaml_ng::from_str(
        "debounce: { config: 5ms }\netcd: { endpoints: [\"http://a:1\"] }\n",
    )
    .expect("file");
    assert_eq!(file.debounce.config, cli.run.debounce.config);
    assert_eq!(file.etcd.etcd_endpoints, cli.run.etcd.etcd_endpoints);
}

#[test]
fn the_tls_port_comes_from_a_file_section_and_bad_combinations_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = sextant_testkit::certs::TestCa::new("ca");
    ca.write(dir.path(), "ca");
    ca.server(&["sextant"]).write(dir.path(), "server");
    // Relative paths in the file are relative to the file.
    let path = dir.path().join("sextant.yaml");
    std::fs::write(
        &path,
        "files: [mesh.yaml]\nxds_addr: \"off\"\ntls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  auth: mtls\n",
    )
    .expect("write");
    let s = resolve_file(&path).expect("valid");
    assert_eq!(s.xds_addr, None);
    let (addr, tls) = s.xds_tls.expect("the TLS port");
    assert_eq!(addr.to_string(), "127.0.0.1:15012");
    let XdsTls::Files(files) = tls else {
        panic!("the TLS port's certificate comes from files")
    };
    assert_eq!(
        files.client_auth,
        sextant_xds::server::tls::ClientAuth::Require
    );
    assert_eq!(s.server.auth, sextant_xds::server::auth::XdsAuth::Mtls);

    let bad = |a: RunArgs| {
        Settings::resolve(&RunArgs {
            files: vec!["x.yaml".into()],
            ..a
        })
        .expect_err("invalid")
        .to_string()
    };
    let e = bad(RunArgs {
        xds_addr: Some("off".into()),
        ..args()
    });
    assert!(e.contains("leaves no xDS port"), "{e}");
    let e = bad(RunArgs {
        tls: TlsArgs {
            tls_cert: Some(dir.path().join("server.pem")),
            ..Default::default()
        },
        ..args()
    });
    assert!(e.contains("--tls-cert and --tls-key go together"), "{e}");
    let e = bad(RunArgs {
        tls: TlsArgs {
            tls_cert: Some(dir.path().join("server.pem")),
            tls_key: Some(dir.path().join("server-key.pem")),
            xds_auth: Some("mtls".into()),
            ..Default::default()
        },
        ..args()
    });
    assert!(
        e.contains("--xds-auth mtls needs client certificates"),
        "{e}"
    );
    let e = bad(RunArgs {
        tls: TlsArgs {
            tls_cert: Some(dir.path().join("missing.pem")),
            tls_key: Some(dir.path().join("server-key.pem")),
            xds_auth: Some("token".into()),
            ..Default::default()
        },
        ..args()
    });
    assert!(
        e.contains("missing.pem") && e.contains("need a way to validate tokens"),
        "{e}"
    );
}

#[test]
fn scope_defaults_come_from_flags_or_the_file_and_bad_entries_are_named() {
    let (_d, path) = config_file(
        "files: [x.yaml]\nscope_default_hosts: [\"./*\", \"shared/*\"]\nscope_root_namespace: mesh-root\n",
    );
    let s = resolve_file(&path).expect("valid");
    let hosts: Vec<String> = s
        .server
        .scoping
        .default_hosts
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(hosts, ["./*", "shared/*"]);
    assert_eq!(s.server.scoping.root_namespace, "mesh-root");

    let defaults = Settings::resolve(&RunArgs {
        files: vec!["x.yaml".into()],
        ..args()
    })
    .expect("valid");
    assert_eq!(
        defaults.server.scoping,
        sextant_xds::scope::ScopeConfig::default()
    );

    let e = Settings::resolve(&RunArgs {
        files: vec!["x.yaml".into()],
        scope_default_hosts: Some(vec!["reviews".into()]),
        ..args()
    })
    .expect_err("refused");
    let text = e.to_string();
    assert!(
        text.contains("--scope-default-hosts") && text.contains("NAMESPACE/HOST"),
        "{text}"
    );
}

#[test]
fn the_ca_flags_turn_the_tls_port_on_and_bad_values_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with = |tls: TlsArgs| {
        Settings::resolve(&RunArgs {
            files: vec!["x.yaml".into()],
            tls,
            ..args()
        })
    };
    // An absent directory is fine (a root is made there at start); the
    // TLS port comes on at Istio's address with the CA's certificate.
    let s = with(TlsArgs {
        ca_dir: Some(dir.path().join("ca")),
        workload_cert_ttl: Some("2h".into()),
        ..Default::default()
    })
    .expect("valid");
    let (addr, tls) = s.xds_tls.expect("the TLS port");
    assert_eq!(addr.to_string(), "127.0.0.1:15012");
    let XdsTls::FromCa { names, client_auth } = tls else {
        panic!("the CA makes the port's certificate")
    };
    assert!(names.iter().any(|n| n == "localhost"), "{names:?}");
    assert_eq!(client_auth, sextant_xds::server::tls::ClientAuth::Optional);
    let ca = s.ca.expect("the CA");
    assert_eq!(ca.max_ttl, std::time::Duration::from_secs(7_200));
    assert_eq!(s.trust_domain, "cluster.local");

    let bad = |tls: TlsArgs| with(tls).expect_err("invalid").to_string();
    let e = bad(TlsArgs {
        workload_cert_ttl: Some("2h".into()),
        ..Default::default()
    });
    assert!(e.contains("--workload-cert-ttl needs the CA"), "{e}");
    let e = bad(TlsArgs {
        ca_dir: Some(dir.path().join("ca")),
        workload_cert_ttl: Some("10s".into()),
        trust_domain: Some("not a domain".into()),
        ..Default::default()
    });
    assert!(
        e.contains("at least 1m") && e.contains("--trust-domain"),
        "{e}"
    );
    // A directory with files that are not a CA: named at start, not later.
    std::fs::write(dir.path().join("ca-cert.pem"), "junk").expect("write");
    let e = bad(TlsArgs {
        ca_dir: Some(dir.path().to_owned()),
        ..Default::default()
    });
    assert!(e.contains("--ca-dir"), "{e}");
}

#[test]
fn the_mesh_mtls_mode_comes_from_the_flag_and_a_bad_one_is_named() {
    let s = Settings::resolve(&RunArgs {
        files: vec!["x.yaml".into()],
        mtls_mode: Some("STRICT".into()),
        tls: TlsArgs {
            trust_domain: Some("example.org".into()),
            ..Default::default()
        },
        ..args()
    })
    .expect("valid");
    assert_eq!(
        s.server.capture.mtls.mode,
        sextant_xds::translate::mtls::PeerMode::Strict
    );
    assert_eq!(s.server.capture.mtls.trust_domain, "example.org");
    let e = Settings::resolve(&RunArgs {
        files: vec!["x.yaml".into()],
        mtls_mode: Some("loose".into()),
        ..args()
    })
    .expect_err("invalid")
    .to_string();
    assert!(e.contains("mtls_mode") || e.contains("--mtls-mode"), "{e}");
}

#[test]
fn the_otlp_endpoint_is_a_plaintext_url_from_the_flag_or_the_file() {
    let with = |url: &str| {
        Settings::resolve(&RunArgs {
            files: vec!["x.yaml".into()],
            otlp_endpoint: Some(url.into()),
            ..args()
        })
    };
    let s = with("http://127.0.0.1:4317").expect("valid");
    assert_eq!(s.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
    for bad in ["https://collector:4317", "collector:4317", "not a url"] {
        let e = with(bad).expect_err(bad);
        assert!(e.to_string().contains("--otlp-endpoint"), "{bad}: {e}");
    }
    let (_dir, path) = config_file("files: [x.yaml]\notlp_endpoint: http://otel:4317\n");
    let s = resolve_file(&path).expect("valid");
    assert_eq!(s.otlp_endpoint.as_deref(), Some("http://otel:4317"));
    let off = Settings::resolve(&RunArgs {
        files: vec!["x.yaml".into()],
        ..args()
    })
    .expect("valid");
    assert_eq!(off.otlp_endpoint, None, "off by default");
}

#[test]
fn dns_names_are_resolved_by_sextant_unless_told_to_leave_them_to_proxies() {
    let with = |mode: Option<&str>, servers: Option<Vec<&str>>| {
        Settings::resolve(&RunArgs {
            files: vec!["x.yaml".into()],
            dns_resolution: mode.map(Into::into),
            dns_servers: servers.map(|v| v.into_iter().map(Into::into).collect()),
            ..args()
        })
    };
    let s = with(None, None).expect("valid");
    assert!(
        s.dns.as_ref().is_some_and(|d| d.servers.is_empty()),
        "by default: Sextant, the system's servers"
    );
    let s = with(Some("sextant"), Some(vec!["10.0.0.10:53", "[::1]:5353"])).expect("valid");
    let servers: Vec<String> = s
        .dns
        .expect("on")
        .servers
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(servers, ["10.0.0.10:53", "[::1]:5353"]);
    assert!(with(Some("proxy"), None).expect("valid").dns.is_none());
    let e = with(Some("envoy"), Some(vec!["10.0.0.10"]))
        .expect_err("two problems")
        .to_string();
    assert!(
        e.contains("--dns-resolution") && e.contains("`sextant` or `proxy`"),
        "{e}"
    );
    assert!(e.contains("--dns-server") && e.contains("IP:PORT"), "{e}");
    let (_dir, path) = config_file("files: [x.yaml]\ndns_resolution: proxy\n");
    assert!(resolve_file(&path).expect("valid").dns.is_none());
}
