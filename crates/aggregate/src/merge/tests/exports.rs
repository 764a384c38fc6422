//! Rules for some namespaces' proxies only: `exportTo`, a namespace's own
//! rules before the others', and a destination policy looked up in the
//! client's namespace, then the service's, then the rest.

use super::*;
use sextant_core::{MeshService, Rule};

fn route(ns: &str, name: &str, host: &str, to: &str, export: &str) -> Rule {
    serde_yaml_ng::from_str::<sextant_core::RouteEntry>(&format!(
        "name: {name}\nnamespace: {ns}\nhosts: [{host}]\nexportTo: {export}\nhttp: [{{route: [{{destination: {{host: {to}}}}}]}}]"
    ))
    .expect("route")
    .into()
}

fn policy(ns: &str, name: &str, host: &str, subset: &str, export: &str) -> Rule {
    serde_yaml_ng::from_str::<sextant_core::PolicyEntry>(&format!(
        "name: {name}\nnamespace: {ns}\nhost: {host}\nexportTo: {export}\nsubsets: [{{name: {subset}}}]"
    ))
    .expect("policy")
    .into()
}

fn in_ns(h: &str, ns: &str) -> Service {
    let mut s = svc(h, 80, &["10.0.0.1"]);
    s.namespace = ns.to_owned();
    s
}

/// The names of the rules the proxies of `ns` see for `ms`.
fn seen(ms: &MeshService, ns: Option<&str>) -> Vec<String> {
    let rules = match ms.variant_for(ns) {
        Some(i) => &ms.namespaced[i].rules,
        None => &ms.rules,
    };
    rules.iter().map(|r| r.key.to_string()).collect()
}

fn setup(rules: Vec<Rule>) -> (MergeState, MeshView) {
    let mut st = state(MergeMode::Union, 1);
    let src = RegistryId::new("memory/rules");
    st.add_rule_shard(src.clone());
    st.apply(
        &ids(1)[0],
        Event::Reset(vec![
            in_ns("reviews.shop", "shop"),
            in_ns("ratings.shop", "shop"),
            in_ns("web.web", "web"),
        ]),
    );
    st.apply_rules(&src, Event::Reset(rules));
    let view = st.build_view(true).expect("view");
    (st, view)
}

#[test]
fn a_rule_exported_to_its_own_namespace_applies_there_only() {
    let (_, v) = setup(vec![route(
        "shop",
        "canary",
        "reviews.shop",
        "ratings.shop",
        "[.]",
    )]);
    let ms = &v.services["reviews.shop"];
    assert!(ms.rules.is_empty(), "not for the others");
    assert_eq!(seen(ms, Some("shop")), ["route shop/canary"]);
    assert_eq!(seen(ms, Some("web")), Vec::<String>::new());
    assert_eq!(seen(ms, None), Vec::<String>::new());
    assert!(v.conflicts.is_empty(), "{:?}", v.conflicts);

    // Exported by name: those namespaces (sharing one variant), not its own.
    let (_, v) = setup(vec![route(
        "shop",
        "canary",
        "reviews.shop",
        "ratings.shop",
        "[web, billing]",
    )]);
    let ms = &v.services["reviews.shop"];
    assert_eq!(ms.namespaced.len(), 1);
    assert_eq!(
        ms.namespaced[0].namespaces.iter().collect::<Vec<_>>(),
        ["billing", "web"]
    );
    assert!(seen(ms, Some("shop")).is_empty());
    // Exported nowhere: nobody.
    let (_, v) = setup(vec![route(
        "shop",
        "off",
        "reviews.shop",
        "ratings.shop",
        "['~']",
    )]);
    let ms = &v.services["reviews.shop"];
    assert!(ms.rules.is_empty() && ms.namespaced.is_empty());
}

/// A team's own route rule for another team's service (or a GAMMA
/// consumer route) overrides the owner's for the team's proxies only; the
/// owner's stays in force for everyone else. Neither is a conflict.
#[test]
fn a_namespaces_own_route_rule_comes_before_the_others() {
    let (_, v) = setup(vec![
        route("shop", "owner", "reviews.shop", "reviews.shop", "['*']"),
        route("web", "mine", "reviews.shop", "ratings.shop", "[.]"),
    ]);
    let ms = &v.services["reviews.shop"];
    assert_eq!(seen(ms, None), ["route shop/owner"]);
    assert_eq!(seen(ms, Some("shop")), ["route shop/owner"]);
    assert_eq!(seen(ms, Some("web")), ["route web/mine"]);
    assert_eq!(seen(ms, Some("other")), ["route shop/owner"]);
    assert!(v.conflicts.is_empty(), "{:?}", v.conflicts);

    // Two public rules of two namespaces: each namespace its own; every
    // other namespace the first by namespace, and that is a conflict.
    let (_, v) = setup(vec![
        route("shop", "owner", "reviews.shop", "reviews.shop", "[]"),
        route("web", "mine", "reviews.shop", "ratings.shop", "[]"),
    ]);
    let ms = &v.services["reviews.shop"];
    assert_eq!(seen(ms, Some("other")), ["route shop/owner"]);
    assert_eq!(seen(ms, Some("web")), ["route web/mine"]);
    assert_eq!(v.conflicts.len(), 1, "{:?}", v.conflicts);
    assert_eq!(
        v.conflicts[0].detail,
        "route shop/owner from memory/rules is in force; route web/mine from memory/rules is ignored for this host"
    );

    // Two rules of one namespace for its own proxies: the first by name,
    // and a conflict saying for whom.
    let (_, v) = setup(vec![
        route("web", "a", "reviews.shop", "ratings.shop", "[.]"),
        route("web", "b", "reviews.shop", "reviews.shop", "[.]"),
    ]);
    assert_eq!(
        seen(&v.services["reviews.shop"], Some("web")),
        ["route web/a"]
    );
    assert_eq!(v.conflicts.len(), 1);
    assert!(
        v.conflicts[0].detail.ends_with(
            "for the proxies of namespace web; route web/b from memory/rules is ignored there"
        ),
        "{}",
        v.conflicts[0].detail
    );
}

/// Istio's DestinationRule lookup: the client's namespace, then the
/// service's, then any other.
#[test]
fn a_policy_is_looked_up_in_the_clients_namespace_then_the_services() {
    let (_, v) = setup(vec![
        policy("aaa", "elsewhere", "reviews.shop", "x", "[]"),
        policy("shop", "owner", "reviews.shop", "v1", "[]"),
        policy("web", "client", "reviews.shop", "v2", "[.]"),
    ]);
    let ms = &v.services["reviews.shop"];
    assert_eq!(seen(ms, None), ["policy shop/owner"]);
    assert_eq!(seen(ms, Some("web")), ["policy web/client"]);
    assert_eq!(seen(ms, Some("aaa")), ["policy aaa/elsewhere"]);
    assert_eq!(seen(ms, Some("zzz")), ["policy shop/owner"]);
    assert!(v.conflicts.is_empty(), "{:?}", v.conflicts);
}

/// A route's destinations' policies travel with it per namespace: the
/// proxies of `web` route to ratings with the subsets web's policy for
/// ratings defines; a change to that policy is a configuration change of
/// reviews too.
#[test]
fn a_destinations_policy_travels_per_namespace() {
    let (mut st, v1) = setup(vec![
        route("shop", "owner", "reviews.shop", "ratings.shop", "[]"),
        policy("web", "ratings", "ratings.shop", "v2", "[.]"),
    ]);
    let ms = &v1.services["reviews.shop"];
    assert!(ms.destination_policies.is_empty());
    let i = ms.variant_for(Some("web")).expect("a variant for web");
    assert_eq!(ms.namespaced[i].rules, ms.rules);
    assert_eq!(
        ms.namespaced[i].destination_policies[0].key.to_string(),
        "policy web/ratings"
    );
    let src = RegistryId::new("memory/rules");
    st.apply_rules(
        &src,
        Event::Apply(policy("web", "ratings", "ratings.shop", "v2", "['*']")),
    );
    let v2 = st.build_view(false).expect("changed");
    let ms = &v2.services["reviews.shop"];
    assert!(ms.namespaced.is_empty(), "exported everywhere: no variant");
    assert_eq!(ms.destination_policies.len(), 1);
    assert!(
        v2.changes_since(&v1)
            .contains(&("reviews.shop".into(), sextant_core::Change::Config))
    );
}
