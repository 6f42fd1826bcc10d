//! The contract's black-box items 1, 3, 5-9 for a Service, as pure checks.

use super::*;
use crate::serving::defaults::Defaults;

fn service(yaml: &str) -> Service {
    serde_norway::from_str(yaml).expect("a Service")
}

const HELLO: &str = "
metadata: {name: hello, namespace: default}
spec:
  template:
    spec:
      containers: [{image: ghcr.io/knative/helloworld-go, env: [{name: TARGET, value: Knoxy}]}]
";

fn errors(yaml: &str) -> Vec<String> {
    service(yaml).validate(&AutoscalerConfig::default(), &Defaults::default())
}

#[test]
fn a_plain_service_is_valid_and_reads_its_container() {
    let s = service(HELLO);
    assert!(s
        .validate(&AutoscalerConfig::default(), &Defaults::default())
        .is_empty());
    let c = &s.spec.template.spec.containers[0];
    assert_eq!(c.image, "ghcr.io/knative/helloworld-go");
    assert_eq!(
        (c.env[0].name.as_str(), c.env[0].value.as_str()),
        ("TARGET", "Knoxy")
    );
    assert!(!s.cluster_local());
}

#[test]
fn autoscaling_annotations_belong_on_the_template() {
    let on_service = errors(
        "metadata: {name: hello, annotations: {autoscaling.knative.dev/min-scale: '1'}}
spec: {template: {spec: {containers: [{image: x}]}}}",
    );
    assert_eq!(
        on_service,
        ["invalid key name \"autoscaling.knative.dev/min-scale\": metadata.annotations\nautoscaling annotations must be put under \"spec.template.metadata.annotations\" to work"]
    );
    let on_template = errors(
        "metadata: {name: hello}
spec: {template: {metadata: {annotations: {autoscaling.knative.dev/min-scale: '1'}}, spec: {containers: [{image: x}]}}}",
    );
    assert!(on_template.is_empty(), "{on_template:?}");
}

#[test]
fn out_of_range_values_and_bad_traffic_are_all_reported() {
    let e = errors(
        "metadata: {name: hello}
spec:
  template:
    metadata: {name: other-1, annotations: {autoscaling.knative.dev/window: 5s}}
    spec: {timeoutSeconds: 601, containers: [{image: x}]}
  traffic: [{revisionName: hello-00001, percent: 90}]",
    );
    assert_eq!(
        e,
        [
            "invalid value: \"other-1\" must have prefix \"hello-\": spec.template.metadata.name",
            "expected 6s <= 5s <= 1h0m0s: spec.template.metadata.annotations.autoscaling.knative.dev/window",
            "expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds",
            "Traffic targets sum to 90, want 100: spec.traffic",
        ]
    );
    let cc = errors("metadata: {name: hello}\nspec: {template: {spec: {containerConcurrency: 1001, containers: [{image: x}]}}}");
    assert_eq!(
        cc,
        ["expected 0 <= 1001 <= 1000: spec.template.spec.containerConcurrency"]
    );
    assert_eq!(
        errors("metadata: {name: hello}\nspec: {template: {spec: {containers: []}}}"),
        ["missing field(s): spec.template.spec.containers"]
    );
}

#[test]
fn each_template_change_is_a_revision_and_nothing_else_is() {
    let mut s = service(HELLO);
    let mut config = Configuration::default();
    assert_eq!(
        config.apply("hello", &s.spec.template),
        Ok(Some("hello-00001".into()))
    );
    // The Service's own labels are no template change.
    s.metadata.labels.insert("team".into(), "a".into());
    assert_eq!(config.apply("hello", &s.spec.template), Ok(None));
    s.spec.template.spec.containers[0].env[0].value = "Again".into();
    assert_eq!(
        config.apply("hello", &s.spec.template),
        Ok(Some("hello-00002".into()))
    );
    assert_eq!(config.latest_created(), Some("hello-00002"));
    assert_eq!(config.generation, 2);
}

#[test]
fn a_named_template_must_change_its_name_with_it() {
    let mut s = service(HELLO);
    s.spec.template.metadata.name = Some("hello-blue".into());
    let mut config = Configuration::default();
    assert_eq!(
        config.apply("hello", &s.spec.template),
        Ok(Some("hello-blue".into()))
    );
    s.spec.template.spec.containers[0].image = "y".into();
    let e = config
        .apply("hello", &s.spec.template)
        .expect_err("same name");
    assert!(
        e.starts_with("Saw the following changes without a name change"),
        "{e}"
    );
    s.spec.template.metadata.name = Some("hello-green".into());
    assert_eq!(
        config.apply("hello", &s.spec.template),
        Ok(Some("hello-green".into()))
    );
}

#[test]
fn the_cluster_local_label_keeps_a_service_off_the_public_domain() {
    let s = service(
        "metadata: {name: hello, labels: {networking.knative.dev/visibility: cluster-local}}
spec: {template: {spec: {containers: [{image: x}]}}}",
    );
    assert!(s.cluster_local());
}
