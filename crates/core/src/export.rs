//! Istio's `exportTo`: which namespaces' proxies see an object (a service,
//! a route rule, a destination policy).
//!
//! A list of entries: `*` every namespace (also an empty list, the
//! default), `.` the object's own namespace, a namespace by name, `~` none
//! (alone). A proxy that names no namespace sees only what is exported
//! everywhere.

/// Whether an object of namespace `own` exported to `export_to` is seen by
/// a proxy of `namespace`.
pub fn exported(export_to: &[String], own: &str, namespace: Option<&str>) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| match e.as_str() {
            "*" => true,
            "~" => false,
            "." => namespace == Some(own),
            ns => namespace == Some(ns),
        })
}

/// True when some proxies may not see the object.
pub fn restricted(export_to: &[String]) -> bool {
    !export_to.is_empty() && !export_to.iter().any(|e| e == "*")
}

/// The namespaces an `exportTo` list names besides "everywhere": `own`
/// for `.`, and each namespace by name. Proxies of any other namespace
/// see the object exactly when it is exported everywhere.
pub fn named<'a>(export_to: &'a [String], own: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    export_to.iter().filter_map(move |e| match e.as_str() {
        "*" | "~" => None,
        "." => Some(own),
        ns => Some(ns),
    })
}

/// What is wrong with entry `i` of `export_to`, if anything.
pub fn entry_problem(export_to: &[String], i: usize) -> Option<String> {
    match export_to.get(i)?.as_str() {
        "*" | "." => None,
        "~" if export_to.len() > 1 => {
            Some("\"~\" (exported nowhere) cannot be combined with other entries".into())
        }
        "~" => None,
        ns if ns.contains('.') => Some(format!(
            "{ns:?}: `*`, `.`, `~` or a namespace (a single DNS label)"
        )),
        ns => crate::validate::dns_name_problem(ns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn entries_decide_who_sees_an_object() {
        let cases: &[(&[&str], Option<&str>, bool)] = &[
            (&[], Some("b"), true),
            (&[], None, true),
            (&["*"], Some("b"), true),
            (&["."], Some("a"), true),
            (&["."], Some("b"), false),
            (&["."], None, false),
            (&["b"], Some("b"), true),
            (&["b"], Some("c"), false),
            (&["~"], Some("a"), false),
            (&[".", "c"], Some("c"), true),
        ];
        for (export, ns, want) in cases {
            assert_eq!(
                exported(&list(export), "a", *ns),
                *want,
                "{export:?} {ns:?}"
            );
        }
        assert!(!restricted(&list(&[])));
        assert!(!restricted(&list(&["*", "."])));
        assert!(restricted(&list(&["."])));
        assert_eq!(
            named(&list(&["*", ".", "b", "~"]), "a").collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let export = list(&["~", "b"]);
        assert!(entry_problem(&export, 0).is_some_and(|p| p.contains("cannot be combined")));
        assert!(entry_problem(&list(&["a.b"]), 0).is_some());
        assert!(entry_problem(&list(&["Bad"]), 0).is_some());
        assert_eq!(entry_problem(&list(&["ok", "."]), 1), None);
    }
}
