//! `dispatch/path`, `dispatch/path_and_percentage` (Knative's path.go): each split appends
//! `Which-Backend` naming its Service, and the backend that answers must be that one.

use serde_json::json;

use crate::fixture::*;

#[tokio::test]
async fn dispatch_path() {
    let mut c = Cluster::new();
    let paths = path_dispatch(&mut c, "");
    c.ingress(
        "path",
        json!({"rules": [rule(&["path.example.com"], paths)]}),
    );
    let gw = c.gateway();
    ready(&gw, "path", None).await;

    for (path, want) in PATH_CASES {
        let (status, body) = get_host(&gw, "public", "path.example.com", path).await;
        let seen = echo(status, &body);
        assert_eq!(which_backend(&seen), want, "{path:?}");
        let sent = if path.is_empty() { "/" } else { path };
        assert_eq!(seen["uri"], sent, "the path reaches the backend unchanged");
    }
}

#[tokio::test]
async fn dispatch_path_and_percentage() {
    let mut c = Cluster::new();
    let (a, b, all) = (c.service("foo-a"), c.service("foo-b"), c.service("rest"));
    let paths = json!([
        {"path": "/foo", "splits": [tagged_split(&a, 50), tagged_split(&b, 50)]},
        {"splits": [tagged_split(&all, 100)]},
    ]);
    c.ingress(
        "path-pct",
        json!({"rules": [rule(&["pp.example.com"], paths)]}),
    );
    let gw = c.gateway();
    ready(&gw, "path-pct", None).await;

    let counts = spread(&gw, "public", "pp.example.com", "/foo", 1000, 8).await;
    assert_eq!(counts.values().sum::<usize>(), 1000);
    for name in counts.keys() {
        assert!(
            [&a.name, &b.name].contains(&name),
            "{name:?} answered /foo, which only splits to foo-a and foo-b: {counts:?}"
        );
    }
    for name in ["foo-a", "foo-b"] {
        let got = counts.get(name).copied().unwrap_or(0);
        assert!(
            (350..=650).contains(&got),
            "{name}: {got} of 1000 (want 500 ± 15%): {counts:?}"
        );
    }
    let (status, body) = get_host(&gw, "public", "pp.example.com", "/other").await;
    assert_eq!(which_backend(&echo(status, &body)), "rest");
}
