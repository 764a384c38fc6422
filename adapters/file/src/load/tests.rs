use super::*;
use std::fs;

const GOOD: &str = "\
services:
  - hostname: reviews.default.svc
    labels: { app: reviews }
    ports:
      - { name: http, port: 9080, protocol: HTTP }
    endpoints:
      - address: 127.0.0.1
        ports: { http: 19080 }
        locality: { region: eu-west, zone: eu-west-1a }
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).expect("write");
    p
}

/// The one problem of a text that has exactly one.
fn parse_one(path: &Path, text: &str) -> FileError {
    let mut problems = parse_file(path, text).expect_err("invalid");
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems.remove(0)
}

fn hostnames(l: &Loaded) -> Vec<&str> {
    l.services.iter().map(|s| s.hostname.as_str()).collect()
}

#[test]
fn parses_the_documented_format() {
    let services = parse_file(Path::new("a.yaml"), GOOD)
        .expect("parses")
        .services;
    assert_eq!(services.len(), 1);
    let s = &services[0];
    assert_eq!(s.endpoints[0].target_port(&s.ports[0]), 19080);
    assert_eq!(s.endpoints[0].locality.zone, "eu-west-1a");
}

#[test]
fn json_files_parse_as_json() {
    let json = r#"{"services":[{"hostname":"a.svc","ports":[{"name":"grpc","port":50051}]}]}"#;
    let services = parse_file(Path::new("a.json"), json)
        .expect("parses")
        .services;
    assert_eq!(services[0].ports[0].protocol, sextant_core::Protocol::Grpc);
    let err = parse_one(
        Path::new("a.json"),
        "{\"services\": [\n  {\"hostname\": 1}]}",
    );
    match err {
        FileError::Parse {
            line,
            column,
            ref message,
            ..
        } => {
            assert_eq!(line, 2, "{err}");
            assert!(column > 0);
            assert!(message.contains("invalid type"), "{message}");
        }
        other => panic!("want a parse error, got {other:?}"),
    }
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let text = "services:\n  - hostname: a.svc\n    ports: [ {name: http, port: 80}\n";
    let err = parse_one(Path::new("/x/a.yaml"), text);
    let FileError::Parse { line, column, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(*line >= 3, "{err}");
    assert!(*column > 0, "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("/x/a.yaml:{line}:{column}: ")),
        "{err}"
    );
}

#[test]
fn unknown_fields_are_parse_errors_with_position() {
    let text =
        "services:\n  - hostname: a.svc\n    ports: [{name: http, port: 80}]\n    endpoint: []\n";
    let err = parse_one(Path::new("a.yaml"), text);
    let msg = err.to_string();
    assert!(msg.contains("unknown field `endpoint`"), "{msg}");
    assert!(msg.starts_with("a.yaml:4:"), "{msg}");
}

#[test]
fn validation_errors_name_file_line_service_and_field() {
    let text = "services:\n  - hostname: ok.svc\n    ports: [{name: http, port: 80}]\n  - hostname: bad.svc\n    ports: [{name: http, port: 70000}]\n";
    let err = parse_one(Path::new("a.yaml"), text);
    assert_eq!(
        err.to_string(),
        "a.yaml:4: service \"bad.svc\", field ports[0].port: 70000 is out of range 1-65535"
    );
}

#[test]
fn empty_text_is_no_services() {
    assert!(parse_file(Path::new("a.yaml"), "").expect("ok").is_empty());
    assert!(
        parse_file(Path::new("a.yaml"), "services: []\n")
            .expect("ok")
            .is_empty()
    );
}

#[test]
fn a_bad_file_keeps_its_last_good_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(dir.path(), "a.yaml", GOOD);
    let mut loader = Loader::new(vec![a.clone()]);
    let first = loader.load();
    assert_eq!(hostnames(&first), ["reviews.default.svc"]);
    assert!(first.problems.is_empty());

    write(dir.path(), "a.yaml", "services: [ {hostname: ");
    let second = loader.load();
    assert_eq!(second.services, first.services, "last good content stays");
    assert_eq!(second.problems.len(), 1);
    assert!(matches!(second.problems[0], FileError::Parse { .. }));

    // Zero bytes: being written; keep the content without complaint.
    write(dir.path(), "a.yaml", "");
    let third = loader.load();
    assert_eq!(third.services, first.services);
    assert!(third.problems.is_empty());

    // A named file deleted is an intended removal: its services go, and
    // the missing file is reported.
    fs::remove_file(&a).expect("rm");
    let fourth = loader.load();
    assert!(fourth.services.is_empty());
    assert!(matches!(fourth.problems[..], [FileError::NotFound { .. }]));
}

/// Every way a file can become unreadable keeps its last good content and
/// says why; putting the file back serves what it now holds. (Permission
/// errors cannot be made as root, which CI is; they take the same path as
/// the I/O errors here.)
#[test]
fn an_unreadable_file_keeps_its_last_good_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(dir.path(), "a.yaml", GOOD);
    let good = Loader::new(vec![a.clone()]).load();
    assert_eq!(hostnames(&good), ["reviews.default.svc"]);
    type Breakage<'a> = (&'a str, &'a dyn Fn(&Path));
    let breakages: [Breakage; 3] = [
        ("a directory in its place", &|p| {
            fs::remove_file(p).expect("rm");
            fs::create_dir(p).expect("mkdir");
        }),
        ("a symlink loop", &|p| {
            fs::remove_file(p).expect("rm");
            std::os::unix::fs::symlink(p, p).expect("symlink");
        }),
        ("a dangling symlink", &|p| {
            fs::remove_file(p).expect("rm");
            std::os::unix::fs::symlink(p.with_extension("gone"), p).expect("symlink");
        }),
    ];
    let repair = |p: &Path| {
        if p.is_dir() {
            fs::remove_dir(p).expect("rmdir");
        } else {
            fs::remove_file(p).expect("rm");
        }
        fs::write(p, GOOD).expect("write");
    };
    for named in [true, false] {
        // Named on the command line, or found in a watched directory.
        let path = if named {
            a.clone()
        } else {
            dir.path().to_owned()
        };
        let mut loader = Loader::new(vec![path]);
        assert_eq!(loader.load().services, good.services);
        for (what, breaks) in &breakages {
            breaks(&a);
            let loaded = loader.load();
            assert_eq!(loaded.services, good.services, "{what} (named: {named})");
            assert!(
                matches!(&loaded.problems[..], [FileError::Read { path, .. }] if path == &a),
                "{what}: {:?}",
                loaded.problems
            );
            repair(&a);
            let loaded = loader.load();
            assert_eq!(loaded.services, good.services);
            assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        }
    }
}

/// A watched directory that cannot be listed any more keeps every file's
/// last good content; one deleted for good removes them.
#[test]
fn an_unreadable_directory_keeps_its_files_last_good_content() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("mesh");
    fs::create_dir(&dir).expect("mkdir");
    write(&dir, "a.yaml", GOOD);
    let mut loader = Loader::new(vec![dir.clone()]);
    let good = loader.load();
    assert_eq!(hostnames(&good), ["reviews.default.svc"]);

    fs::remove_file(dir.join("a.yaml")).expect("rm");
    fs::remove_dir(&dir).expect("rmdir");
    std::os::unix::fs::symlink(&dir, &dir).expect("symlink loop");
    let loaded = loader.load();
    assert_eq!(loaded.services, good.services);
    assert!(!loaded.problems.is_empty());

    fs::remove_file(&dir).expect("rm loop");
    let loaded = loader.load();
    assert!(loaded.services.is_empty(), "deleted: its services go");
}

#[test]
fn a_file_that_never_parsed_contributes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(dir.path(), "a.yaml", "services: {");
    let loaded = Loader::new(vec![a]).load();
    assert!(loaded.services.is_empty());
    assert_eq!(loaded.problems.len(), 1);
}

#[test]
fn directories_contribute_their_registry_files_in_name_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "b.yaml", &GOOD.replace("reviews.default", "b"));
    write(
        dir.path(),
        "a.json",
        r#"{"services":[{"hostname":"a.svc","ports":[{"name":"http","port":80}]}]}"#,
    );
    write(dir.path(), "c.yml", &GOOD.replace("reviews.default", "c"));
    write(
        dir.path(),
        ".hidden.yaml",
        &GOOD.replace("reviews.default", "hidden"),
    );
    write(dir.path(), "notes.txt", "not a registry file");
    write(dir.path(), "b.yaml~", "editor backup");
    fs::create_dir(dir.path().join("sub.yaml")).expect("mkdir");
    let mut loader = Loader::new(vec![dir.path().to_owned()]);
    let loaded = loader.load();
    assert_eq!(hostnames(&loaded), ["a.svc", "b.svc", "c.svc"]);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);

    // A file removed from the directory removes its services, no error.
    fs::remove_file(dir.path().join("b.yaml")).expect("rm");
    let loaded = loader.load();
    assert_eq!(hostnames(&loaded), ["a.svc", "c.svc"]);
    assert!(loaded.problems.is_empty());
}

#[test]
fn a_hostname_defined_twice_is_reported_and_the_first_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a.yaml", GOOD);
    write(dir.path(), "b.yaml", &GOOD.replace("19080", "29080"));
    let loaded = Loader::new(vec![dir.path().to_owned()]).load();
    assert_eq!(loaded.services.len(), 1);
    assert_eq!(loaded.services[0].endpoints[0].ports["http"], 19080);
    let msg = loaded.problems[0].to_string();
    assert!(
        msg.contains("b.yaml:2: service \"reviews.default.svc\" is already defined in"),
        "{msg}"
    );
}

#[test]
fn unchanged_files_are_not_parsed_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(dir.path(), "a.yaml", GOOD);
    let mut loader = Loader::new(vec![a]);
    let first = loader.load();
    let digest = loader.cache.values().next().expect("cached").digest;
    let second = loader.load();
    assert_eq!(first, second);
    assert_eq!(loader.cache.values().next().expect("cached").digest, digest);
}

#[test]
fn registry_file_names() {
    for (name, want) in [
        ("a.yaml", true),
        ("a.yml", true),
        ("a.json", true),
        (".a.yaml", false),
        ("a.yaml.swp", false),
        ("a.yaml~", false),
        ("a.txt", false),
        ("..data", false),
    ] {
        assert_eq!(is_registry_file(Path::new(name)), want, "{name}");
    }
}

#[test]
fn the_example_registry_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/laptop/mesh.yaml");
    let loaded = Loader::new(vec![path]).load();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(loaded.services.len(), 1);
    assert_eq!(loaded.services[0].endpoints.len(), 2);
}

#[test]
fn reason_is_the_message_without_the_location() {
    let err = parse_one(Path::new("a.yaml"), "services: [ {");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", err.location()))
    );
    assert!(!err.reason().contains("a.yaml"), "{}", err.reason());
    assert_eq!(
        err.to_string(),
        format!("{}: {}", err.location(), err.reason())
    );
}

#[test]
fn deep_nesting_is_refused_before_the_yaml_parser_sees_it() {
    // 100,000 levels took the parser over a minute; refused at once, with
    // where the limit was passed.
    let deep = format!("services: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    match parse_one(Path::new("a.yaml"), &deep) {
        FileError::Parse {
            line,
            column,
            message,
            ..
        } => {
            assert_eq!((line, column), (1, 11 + MAX_NESTING));
            assert!(message.contains("nested deeper than 64"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Within the limit, over several lines, the parser decides as usual.
    let ok = format!(
        "services:\n  {}\n  {}\n",
        "[".repeat(MAX_NESTING),
        "]".repeat(MAX_NESTING)
    );
    assert!(matches!(
        parse_one(Path::new("a.yaml"), &ok),
        FileError::Parse { message, .. } if !message.contains("nested")
    ));
    // Brackets in quoted scalars and comments do not count; an apostrophe
    // inside a plain scalar does not open a quote.
    let text = format!(
        "# {open}\nservices:\n  - hostname: reviews.default.svc\n    labels: {{ note: \"{open}\", it: don't, other: '{open}' }}\n    ports: [{{ name: http, port: 80 }}]\n",
        open = "[".repeat(200)
    );
    let services = parse_file(Path::new("a.yaml"), &text)
        .expect("parses")
        .services;
    assert_eq!(services[0].labels["note"], "[".repeat(200));
}

/// Every problem of a file in one reading, one per line, each with its
/// line and the path of the value: `sextant check-config` needs one run.
#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let text = "\
services:
  - hostname: a.svc
    ports: [{ name: http, port: 80, protocol: HTTP9 }]
    endpoints:
      - { address: 10.0.0.1 }
      - { address: \"not an ip\" }
  - hostname: Bad_Host
    ports: [{ name: http, port: 0 }]
    endpoints: [{ address: 10.0.0.2, weight: 0 }]
  - hostname: c.svc
    ports: [{ name: http, port: 80 }]
    endpoints: [{ address: 10.0.0.3, ports: { nope: 8080 } }]
";
    let problems = parse_file(Path::new("mesh.yaml"), text).expect_err("invalid");
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let all = lines.join("\n");
    for want in [
        "mesh.yaml:3:",
        "services[0].ports[0].protocol",
        "mesh.yaml:6:1: services[0].endpoints[1].address",
        "mesh.yaml:7: service \"Bad_Host\"",
        "ports[0].port",
        "weight",
        "mesh.yaml:10: service \"c.svc\"",
        "nope",
    ] {
        assert!(all.contains(want), "no {want:?} in:\n{all}");
    }
    // One problem per line: hostname, port and weight of the second service
    // are three.
    assert!(
        lines.iter().filter(|l| l.contains("Bad_Host")).count() >= 3,
        "{all}"
    );
    assert!(lines.iter().all(|l| l.starts_with("mesh.yaml:")), "{all}");
}

const RULES: &str = "services:
  - hostname: reviews.default.svc
    ports: [{ name: http, port: 9080 }]
routes:
  - name: reviews
    hosts: [reviews.default.svc]
    http:
      - match: [{ headers: { x-user: { exact: alice } } }]
        route: [{ destination: { host: reviews.default.svc, subset: v2 } }]
      - route:
          - { destination: { host: reviews.default.svc, subset: v1 }, weight: 90 }
          - { destination: { host: reviews.default.svc, subset: v2 }, weight: 10 }
policies:
  - name: reviews
    host: reviews.default.svc
    subsets:
      - { name: v1, labels: { version: v1 } }
      - { name: v2, labels: { version: v2 } }
";

#[test]
fn rules_sit_beside_services() {
    let content = parse_file(Path::new("a.yaml"), RULES).expect("parses");
    assert_eq!(content.services.len(), 1);
    let keys: Vec<String> = content.rules.iter().map(|r| r.key.to_string()).collect();
    assert_eq!(keys, ["route default/reviews", "policy default/reviews"]);
}

#[test]
fn every_rule_problem_is_reported_with_its_line() {
    // A weight typo (sum 95) and an unknown field in a policy: both, each
    // at the line of its entry, in one reading.
    let text = RULES
        .replace("weight: 10 }", "weight: 5 }")
        .replace("{ name: v2, labels", "{ name: v2, label");
    let problems = parse_file(Path::new("mesh.yaml"), &text).expect_err("invalid");
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:#?}");
    assert!(
        text[0].starts_with(
            "mesh.yaml:5: route default/reviews, field http[1].route: weights sum to 95"
        ),
        "{text:#?}"
    );
    assert!(
        text[1].starts_with("mesh.yaml:18:21: policies[0].subsets[1].label: unknown field `label`")
            && text[1].contains("unknown field `label`"),
        "{text:#?}"
    );

    // Valid YAML with only an invalid rule: the typed parse's path.
    let text = RULES.replace("weight: 10 }", "weight: 5 }");
    let problems = parse_file(Path::new("mesh.yaml"), &text).expect_err("invalid");
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].to_string().contains("weights sum to 95"),
        "{}",
        problems[0]
    );
}

#[test]
fn a_bad_rule_keeps_the_files_last_good_content_and_duplicates_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, RULES).expect("write");
    let mut loader = Loader::new(vec![dir.path().to_owned()]);
    let good = loader.load();
    assert_eq!(good.rules.len(), 2);
    std::fs::write(&path, RULES.replace("weight: 10 }", "weight: 5 }")).expect("write");
    let bad = loader.load();
    assert_eq!(bad.rules, good.rules, "last good rules stay");
    assert_eq!(bad.services, good.services, "and services");
    assert_eq!(bad.problems.len(), 1);

    std::fs::write(
        dir.path().join("other.yaml"),
        "policies:\n  - name: reviews\n    host: reviews.default.svc\n",
    )
    .expect("write");
    let dup = loader.load();
    assert_eq!(dup.rules.len(), 2);
    assert!(
        dup.problems.iter().any(|p| p
            .to_string()
            .contains("policy default/reviews is already defined")),
        "{:?}",
        dup.problems
    );
}

#[test]
fn a_billion_laughs_is_an_error_not_an_out_of_memory() {
    // Nine levels of ten aliases each would expand to 10^9 strings. The
    // loader decodes into its own types, field by field, as the events come:
    // an alias is replayed only as far as a decoder accepts it, so the
    // bomb stops at its first field or element of the wrong shape. Two
    // placements: anchors in fields of their own, and aliases into a
    // known field (endpoints, a list of objects).
    let mut text = String::from(
        "services:\n  - hostname: a.svc\n    x0: &a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n",
    );
    for level in 1..9 {
        let list = vec![format!("*a{}", level - 1); 10].join(",");
        text.push_str(&format!("    x{level}: &a{level} [{list}]\n"));
    }
    text.push_str("    ports: *a8\n");
    let started = std::time::Instant::now();
    let problems = parse_file(Path::new("bomb.yaml"), &text).expect_err("refused");
    let message = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(message.contains("bomb.yaml:"), "{message}");
    // It stops long before expanding: a guard against a hang, not a timing.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    eprintln!("billion laughs: {message}");

    let mut text = String::from(
        "services:\n  - hostname: a.svc\n    ports: [{ name: http, port: 80 }]\n    endpoints: &a0 [[lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]]\n",
    );
    for level in 1..9 {
        let list = vec![format!("*a{}", level - 1); 10].join(",");
        text.push_str(&format!(
            "  - hostname: s{level}.svc\n    ports: [{{ name: http, port: 80 }}]\n    endpoints: &a{level} [{list}]\n"
        ));
    }
    let started = std::time::Instant::now();
    let problems = parse_file(Path::new("bomb.yaml"), &text).expect_err("refused");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(
        problems
            .iter()
            .all(|p| p.to_string().contains("bomb.yaml:")),
        "{problems:?}"
    );
}

#[test]
fn scopes_are_istio_sidecar_specs_and_a_bad_entry_names_its_line() {
    let text = format!(
        "{RULES}scopes:
  - name: default
    namespace: shop
    egress:
      - hosts: [\"./*\", \"shared/*\"]
  - name: web
    namespace: shop
    workloadSelector: {{ labels: {{ app: web }} }}
    egress: [{{ hosts: [\"./web.shop.svc\"] }}]
"
    );
    let content = parse_file(Path::new("a.yaml"), &text).expect("parses");
    let keys: Vec<String> = content.rules.iter().map(|r| r.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "route default/reviews",
            "policy default/reviews",
            "scope shop/default",
            "scope shop/web"
        ]
    );
    let web = content.rules[3].as_scope().expect("scope");
    assert_eq!(web.workload_selector["app"], "web");

    let bad = text.replace("\"shared/*\"", "\"shared\"");
    let problems = parse_file(Path::new("a.yaml"), &bad).expect_err("invalid");
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:#?}");
    assert!(
        text[0].starts_with("a.yaml:23:16: scopes[0].egress[0].hosts[1]")
            && text[0].contains("NAMESPACE/HOST"),
        "{text:#?}"
    );
}

#[test]
fn peer_authentications_are_istio_specs_and_a_bad_one_names_its_line() {
    let text = format!(
        "{RULES}peerAuthentications:
  - name: default
    namespace: istio-system
    mtls: {{ mode: STRICT }}
  - name: web
    namespace: shop
    selector: {{ matchLabels: {{ app: web }} }}
    portLevelMtls: {{ 8080: {{ mode: DISABLE }} }}
"
    );
    let content = parse_file(Path::new("a.yaml"), &text).expect("parses");
    let keys: Vec<String> = content.rules.iter().map(|r| r.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "route default/reviews",
            "policy default/reviews",
            "peer_authentication istio-system/default",
            "peer_authentication shop/web"
        ]
    );
    let web = content.rules[3]
        .as_peer_auth()
        .expect("peer authentication");
    assert_eq!(web.selector["app"], "web");
    assert_eq!(
        web.port_level[&8080],
        sextant_core::rules::MtlsMode::Disable
    );
    // Ports belong to workloads: portLevelMtls without a selector is named.
    let bad = text.replace("    selector: { matchLabels: { app: web } }\n", "");
    let problems = parse_file(Path::new("a.yaml"), &bad).expect_err("invalid");
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("portLevelMtls") && t.contains("selector")),
        "{text:#?}"
    );
}

/// A service's `exportTo` from a file; a bad entry is a problem of that
/// field, with its line.
#[test]
fn export_to_is_read_and_checked() {
    let text = "services:\n  - hostname: a.shop.svc\n    namespace: shop\n    exportTo: [\".\", billing]\n    ports: [{ name: http, port: 80 }]\n";
    let services = parse_file(Path::new("a.yaml"), text)
        .expect("parses")
        .services;
    assert_eq!(services[0].export_to, [".", "billing"]);
    let bad = text.replace("billing", "Not.A.Namespace");
    let err = parse_one(Path::new("a.yaml"), &bad).to_string();
    assert!(err.contains("exportTo[1]"), "{err}");
}

#[test]
fn entries_of_every_file_become_services_and_what_is_not_served_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let entries = write(
        dir.path(),
        "entries.yaml",
        "\
serviceEntries:
  - name: cart-vms
    namespace: shop
    hosts: [cart.shop.vm]
    location: MESH_INTERNAL
    resolution: STATIC
    ports: [{ number: 8080, name: http }]
    workloadSelector: { labels: { app: cart } }
  - name: clash
    namespace: shop
    hosts: [cart.shop.vm, other.shop.vm, \"*.wild.example\"]
    resolution: STATIC
    ports: [{ number: 80, name: http }]
    endpoints: [{ address: 10.9.0.1 }]
  - name: taken
    hosts: [reviews.default.svc]
    resolution: DNS
    ports: [{ number: 80, name: http }]
",
    );
    let vms = write(
        dir.path(),
        "vms.yaml",
        "\
workloadEntries:
  - { name: vm-1, namespace: shop, address: 10.2.0.1, labels: { app: cart } }
  - { name: vm-2, namespace: shop, address: 10.2.0.2, labels: { app: cart }, ports: { http: 9090 } }
",
    );
    let services = write(dir.path(), "services.yaml", GOOD);
    let mut loader = Loader::new(vec![dir.path().to_owned()]);
    let l = loader.load();
    assert_eq!(
        hostnames(&l),
        ["reviews.default.svc", "cart.shop.vm", "other.shop.vm"]
    );
    let cart = &l.services[1];
    let ports: Vec<u32> = cart.endpoints.iter().map(|e| e.ports["http"]).collect();
    assert_eq!(ports, [8080, 9090], "workloads of another file");
    let text: Vec<String> = l.problems.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    let clash = format!("{}:9: ServiceEntry shop/clash:", entries.display());
    assert!(text[0].starts_with(&clash), "{text:?}");
    assert!(
        text[0].contains("also declared by ServiceEntry shop/cart-vms")
            && text[0].contains("wildcard")
    );
    // A host a service of a file already has: the service wins.
    assert!(
        text[1].contains("service \"reviews.default.svc\" is already defined in")
            && text[1].contains(&services.display().to_string()),
        "{text:?}"
    );
    // A workload removed and added back.
    fs::write(&vms, "workloadEntries:\n  - { name: vm-2, namespace: shop, address: 10.2.0.2, labels: { app: cart } }\n").expect("write");
    assert_eq!(loader.load().services[1].endpoints.len(), 1);
    fs::write(&vms, "workloadEntries:\n  - { name: vm-1, namespace: shop, address: 10.2.0.1, labels: { app: cart } }\n  - { name: vm-2, namespace: shop, address: 10.2.0.2, labels: { app: cart } }\n").expect("write");
    assert_eq!(loader.load().services[1].endpoints.len(), 2);
    // A typo refuses the file, which keeps its last good content.
    fs::write(&entries, "serviceEntries:\n  - name: x\n    hostz: [a.b]\n").expect("write");
    let l = loader.load();
    assert!(hostnames(&l).contains(&"cart.shop.vm"));
    assert!(
        l.problems
            .iter()
            .any(|p| p.to_string().contains("unknown field `hostz`")),
        "{:?}",
        l.problems
    );
}

#[tokio::test]
async fn groups_go_to_the_board_and_the_entries_registered_there_are_selected() {
    use sextant_core::Health;
    use sextant_core::groups::WorkloadGroups;
    let dir = tempfile::tempdir().expect("tmp");
    let file = write(
        dir.path(),
        "vms.yaml",
        "\
serviceEntries:
  - name: cart-vms
    namespace: shop
    hosts: [cart.shop.vm]
    location: MESH_INTERNAL
    resolution: STATIC
    ports: [{ number: 8080, name: http }]
    workloadSelector: { labels: { app: cart } }
workloadGroups:
  - name: cart
    namespace: shop
    metadata: { labels: { app: cart } }
    template: { ports: { http: 9090 } }
  - name: cart
    namespace: shop
  - name: broken
    template: { address: 10.0.0.1 }
",
    );
    let board = Board::new();
    let mut loader = Loader::with_board(vec![file.clone()], Arc::clone(&board));
    let l = loader.load();
    assert!(l.services[0].endpoints.is_empty(), "nothing registered yet");
    let text: Vec<String> = l.problems.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].starts_with(&format!(
            "{}:14: WorkloadGroup shop/cart: already defined",
            file.display()
        )),
        "{text:?}"
    );
    assert!(
        text[1].contains("WorkloadGroup default/broken: template.address"),
        "{text:?}"
    );
    assert_eq!(l.groups.len(), 1);

    let group = board
        .group("shop", "cart")
        .expect("the board has the group");
    let held = board
        .hold(
            &group,
            group.entry_for("10.2.0.9".parse().expect("ip"), None),
            std::time::Duration::from_secs(1),
        )
        .expect("held");
    let l = loader.load();
    let endpoints = &l.services[0].endpoints;
    assert_eq!(endpoints.len(), 1, "{:?}", l.services);
    assert_eq!(endpoints[0].address.to_string(), "10.2.0.9");
    assert_eq!(endpoints[0].ports["http"], 9090, "the template's port");
    assert!(
        l.problems.len() == 2,
        "a registered entry is no file's problem"
    );
    held.set_health(Health::Unhealthy);
    assert_eq!(
        loader.load().services[0].endpoints[0].health,
        Health::Unhealthy
    );
}
