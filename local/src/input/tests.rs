//! Reading Services, Knative's ConfigMaps and the image map; errors name file, document,
//! object and field.

use super::*;

fn dir(files: &[(&str, &str)]) -> (PathBuf, Input) {
    // One directory per call: the tests run at once.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("knoxy-local-input-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("a file");
    }
    let input = read(std::slice::from_ref(&dir));
    (dir, input)
}

const HELLO: &str = "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    metadata: {annotations: {autoscaling.knative.dev/target: '10'}}
    spec: {containers: [{image: ghcr.io/knative/helloworld-go}]}
";

#[test]
fn services_configmaps_and_the_image_map_are_read_configuration_first() {
    let (d, input) = dir(&[
        ("a-hello.yaml", HELLO),
        (
            "b-config.yaml",
            "apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {stable-window: 10s, max-scale-limit: '5', max-scale: '5'}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: config-network, namespace: knative-serving}
data: {tag-template: '{{.Name}}-{{.Tag}}'}
---
apiVersion: knoxy.dev/v1alpha1
kind: LocalConfig
metadata: {name: local}
images: {ghcr.io/knative/helloworld-go: [knoxy-helloworld]}
",
        ),
    ]);
    assert!(input.errors.is_empty(), "{:?}", input.errors);
    assert!(input.services.contains_key("default/hello"));
    assert_eq!(input.autoscaler.stable_window.to_string(), "10s");
    assert_eq!(input.network.tag_template, "{{.Name}}-{{.Tag}}");
    assert_eq!(
        input.images["ghcr.io/knative/helloworld-go"],
        ["knoxy-helloworld"]
    );
    assert_eq!(
        input.domains.for_labels(&BTreeMap::new()).as_deref(),
        Some("example.com")
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn a_bad_document_is_named_and_holds_back_only_itself() {
    let (d, input) = dir(&[(
        "services.yaml",
        &format!(
            "{HELLO}---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: broken}}
spec: {{template: {{spec: {{timeoutSeconds: 601, containers: [{{image: x}}]}}}}}}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: typo}}
spec: {{template: {{spec: {{containers: [{{image: x}}]}}}}, trafic: []}}
"
        ),
    )]);
    assert!(input.services.contains_key("default/hello"));
    assert_eq!(input.services.len(), 1);
    let shown: Vec<String> = input.errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(shown[0].ends_with("services.yaml: document 2: Service broken: expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds"), "{}", shown[0]);
    assert!(
        shown[1].contains("document 3: Service typo"),
        "{}",
        shown[1]
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn config_domain_picks_the_most_specific_matching_selector() {
    let data = BTreeMap::from([
        ("example.com".to_owned(), String::new()),
        (
            "prod.example.com".to_owned(),
            "selector:\n  env: prod\n".to_owned(),
        ),
        (
            "svc.cluster.local".to_owned(),
            "selector:\n  env: internal\n".to_owned(),
        ),
    ]);
    let domains = Domains::from_data(&data).expect("valid");
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        domains.for_labels(&labels(&[])).as_deref(),
        Some("example.com")
    );
    assert_eq!(
        domains.for_labels(&labels(&[("env", "prod")])).as_deref(),
        Some("prod.example.com")
    );
    assert_eq!(
        domains.for_labels(&labels(&[("env", "internal")])),
        None,
        "cluster-local"
    );
    // config-domain with no entries: every route is cluster-local.
    assert_eq!(
        Domains::from_data(&BTreeMap::new())
            .expect("valid")
            .for_labels(&labels(&[])),
        None
    );
}

#[test]
fn bad_configuration_is_an_error_naming_the_key() {
    let (d, input) = dir(&[(
        "config.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata: {name: config-network}
data: {domain-template: '{{.Name}}/{{.Domain}}'}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler}
data: {max-scale-up-rate: '1'}
",
    )]);
    let shown: Vec<String> = input.errors.iter().map(ToString::to_string).collect();
    assert!(
        shown[0].contains("domain-template") && shown[0].contains("host name"),
        "{shown:?}"
    );
    assert!(
        shown[1].contains("max-scale-up-rate = 1, must be greater than 1.0"),
        "{shown:?}"
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn the_shipped_example_reads_clean() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/local");
    let input = read(&[example]);
    assert!(input.errors.is_empty(), "{:?}", input.errors);
    let services: Vec<&str> = input.services.keys().map(String::as_str).collect();
    assert_eq!(services, ["default/hello", "default/helloworld"]);
    for svc in input.services.values() {
        let image = &svc.spec.template.spec.containers[0].image;
        assert!(input.images.contains_key(image), "{image} has a command");
    }
}

#[test]
fn a_file_broken_while_running_keeps_what_it_held_and_a_good_file_still_applies() {
    let autoscaler = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-autoscaler}\ndata: {stable-window: 20s}\n";
    let (dir, first) = dir(&[
        ("hello.yaml", &format!("{HELLO}---\n{autoscaler}")),
        ("other.yaml", &HELLO.replace("name: hello", "name: other")),
    ]);
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    // A syntax error in one file, an edit in the other.
    std::fs::write(dir.join("hello.yaml"), "apiVersion: [\n").expect("write");
    std::fs::write(
        dir.join("other.yaml"),
        HELLO
            .replace("name: hello", "name: other")
            .replace("'10'", "'20'"),
    )
    .expect("write");
    let second = read(std::slice::from_ref(&dir)).held_over(&first);
    assert_eq!(second.errors.len(), 1, "{:?}", second.errors);
    assert!(second.errors[0].file.ends_with("hello.yaml"));
    assert_eq!(
        second.services["default/hello"],
        first.services["default/hello"]
    );
    assert_eq!(second.autoscaler, first.autoscaler);
    let other = &second.services["default/other"]
        .spec
        .template
        .metadata
        .annotations;
    assert_eq!(other["autoscaling.knative.dev/target"], "20");
    // Fixed, then deleted: each reading is what the files say.
    std::fs::write(dir.join("hello.yaml"), HELLO).expect("write");
    let third = read(std::slice::from_ref(&dir)).held_over(&second);
    assert!(third.errors.is_empty());
    assert_ne!(third.autoscaler, first.autoscaler);
    std::fs::remove_file(dir.join("hello.yaml")).expect("remove");
    let fourth = read(std::slice::from_ref(&dir)).held_over(&third);
    assert!(!fourth.services.contains_key("default/hello"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_defaults_set_the_limits_a_service_is_checked_against() {
    let defaults = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-defaults}\ndata: {max-revision-timeout-seconds: '900', revision-timeout-seconds: '100'}\n";
    let long = HELLO.replace(
        "    spec: {containers: [{image: ghcr.io/knative/helloworld-go}]}",
        "    spec: {timeoutSeconds: 800, containers: [{image: ghcr.io/knative/helloworld-go}]}",
    );
    let (_, with) = dir(&[("defaults.yaml", defaults), ("hello.yaml", &long)]);
    assert!(with.errors.is_empty(), "{:?}", with.errors);
    assert_eq!(with.defaults.revision_timeout_seconds, 100);
    let (_, without) = dir(&[("hello.yaml", &long)]);
    assert!(
        without.errors[0]
            .message
            .contains("expected 0 <= 800 <= 600: spec.template.spec.timeoutSeconds"),
        "{:?}",
        without.errors
    );
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-defaults}\ndata: {revision-timeout-seconds: '700'}\n";
    let (_, broken) = dir(&[("defaults.yaml", bad)]);
    assert!(broken.errors[0].message.contains(
        "revision-timeout-seconds (700) cannot be greater than max-revision-timeout-seconds (600)"
    ));
}

#[test]
fn config_gc_and_config_deployment_are_read_and_checked() {
    let gc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-gc}\ndata: {max-non-active-revisions: '0', min-non-active-revisions: '0'}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-deployment}\ndata: {progress-deadline: 90s}\n";
    let (_, read) = dir(&[("config.yaml", gc)]);
    assert!(read.errors.is_empty(), "{:?}", read.errors);
    assert_eq!(read.gc.max_non_active, Some(0));
    assert_eq!(read.progress_deadline, Some(GoDuration::seconds(90)));
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-deployment}\ndata: {progress-deadline: 0s}\n";
    let (_, read) = dir(&[("config.yaml", bad)]);
    assert!(read.errors[0]
        .message
        .contains("progress-deadline cannot be a non-positive duration, was 0s"));
}
