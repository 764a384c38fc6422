//! Consul's documented subset filter forms, parsed and evaluated.

use super::*;
use crate::api::{AgentService, NodeInfo};

fn instance(id: &str, tags: &[&str], meta: &[(&str, &str)]) -> ServiceEntry {
    ServiceEntry {
        node: NodeInfo {
            node: "node-1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            meta: Some([("rack".to_owned(), "r1".to_owned())].into()),
        },
        service: AgentService {
            id: id.into(),
            service: "web".into(),
            tags: Some(tags.iter().map(|t| (*t).to_owned()).collect()),
            address: String::new(),
            port: 8080,
            meta: Some(
                meta.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            weights: None,
            kind: None,
        },
        checks: Vec::new(),
    }
}

#[test]
fn documented_forms_evaluate_as_consul_does() {
    let v1 = instance("web-1", &["primary"], &[("version", "v1")]);
    let v2 = instance("web-2", &["canary"], &[("version", "v2")]);
    let bare = instance("web-3", &[], &[]);
    let cases: &[(&str, [bool; 3])] = &[
        (r#"Service.Meta.version == v1"#, [true, false, false]),
        (r#"Service.Meta.version == "v2""#, [false, true, false]),
        (r#"Service.Meta.version != v1"#, [false, true, true]),
        (r#"Service.Tags contains "canary""#, [false, true, false]),
        (r#""primary" in Service.Tags"#, [true, false, false]),
        (r#""primary" not in Service.Tags"#, [false, true, true]),
        (r#"Service.Tags not contains canary"#, [true, false, true]),
        (
            r#"Service.Meta.version == v1 or Service.Meta.version == v2"#,
            [true, true, false],
        ),
        (r#"not (Service.Meta.version == v1)"#, [false, true, true]),
        (r#"Service.Meta.version is empty"#, [false, false, true]),
        (
            r#"Service.Tags is not empty and not Service.ID == "web-2""#,
            [true, false, false],
        ),
        (
            r#"(Service.Meta.version == v1 or Service.Tags contains canary) and Node.Meta.rack == r1"#,
            [true, true, false],
        ),
        (
            r#"Node.Datacenter == dc1 and Service.Port == 8080"#,
            [true, true, true],
        ),
    ];
    for (filter, want) in cases {
        let e = parse(filter).unwrap_or_else(|err| panic!("{filter}: {err}"));
        let got = [eval(&e, &v1), eval(&e, &v2), eval(&e, &bare)];
        assert_eq!(&got, want, "{filter}");
    }
}

#[test]
fn what_is_not_evaluated_is_named() {
    for (filter, says) in [
        (r#"Service.Meta.version matches "v.*""#, "matches"),
        (r#"Service.Weights.Passing == 1"#, "Service.Weights.Passing"),
        (r#"Service.Meta.version == "v1"#, "unterminated"),
        (r#"(Service.Meta.version == v1"#, "without its )"),
        (r#"Service.Meta.version = v1"#, "operator"),
        (r#"Service.Meta.version == v1 v2"#, "unexpected"),
    ] {
        let err = parse(filter).expect_err(filter);
        assert!(err.contains(says), "{filter}: {err}");
    }
    let deep = format!("{}Service.ID == a{}", "(".repeat(40), ")".repeat(40));
    assert!(parse(&deep).expect_err("deep").contains("nested"));
    assert!(
        parse(&"a".repeat(5000))
            .expect_err("long")
            .contains("longer")
    );
}
