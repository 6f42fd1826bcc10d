//! `knoxy local` end to end (issue 14's tests): the real binary runs Services from YAML as
//! real processes, observed through `/local` and real requests through its gateway. A
//! Service at zero answers its first request; an edit makes a revision, and a 90/10 split
//! with a tag is served as written; a bad edit is reported and what ran keeps serving; an
//! HPA-class revision fails clearly. Every test ends with SIGTERM and no orphan process.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use http::StatusCode;
use knoxy_tests::local::{condition, ready, revision, service, Local, FAST_AUTOSCALER};
use knoxy_tests::{bin_path, get_host, TempDir};

const IMAGES: &str = "apiVersion: knoxy.dev/v1alpha1
kind: LocalConfig
images:
  example.org/hello: [knoxy-helloworld]
  example.org/autoscale: [knoxy-autoscale]
";

/// A helloworld Service `name` answering `Hello {target}!`, with more template lines.
fn hello(name: &str, target: &str, template: &str, spec: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: {name}}}
spec:
  template:
{template}    spec:
      containers:
      - image: example.org/hello
        env: [{{name: TARGET, value: {target}}}]
{spec}"
    )
}

/// GET through the public port until it answers 200 (at most `limit`).
async fn answer(local: &Local, host: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (status, _, body) = get_host(&local.gw, "public", host, "/").await;
        if status == StatusCode::OK {
            return body;
        }
        assert!(Instant::now() < deadline, "{host}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_service_at_zero_answers_its_first_request() {
    let dir = TempDir::new("local-zero");
    dir.write("config.yaml", &format!("{FAST_AUTOSCALER}---\n{IMAGES}"));
    dir.write("zero.yaml", &hello("zero", "Zero", "", ""));
    let local = Local::start(&dir.0);
    // Idle from the start: a window of 6 s and a 2 s grace period take it to zero.
    let view = local
        .until("zero at zero", Duration::from_secs(60), |v| {
            revision(v, "zero-00001")["instances"] == 0
                && revision(v, "zero-00001")["status"]["actualReplicas"] == 0
        })
        .await;
    let rev = revision(&view, "zero-00001");
    assert_eq!(condition(rev, "Ready").0, "True", "{rev:#}");
    assert_eq!(
        condition(rev, "Active"),
        ("False".into(), "NoTraffic".into())
    );
    assert!(ready(&view, "zero"), "the Service stays Ready at zero");
    // The first request is held until an instance is up, then answered.
    let (status, _, body) = get_host(&local.gw, "public", "zero.default.example.com", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Hello Zero!\n"));
    let view = local.view().await;
    assert_eq!(revision(&view, "zero-00001")["instances"], 1);
    local.stop();
}

#[tokio::test]
async fn an_edit_makes_a_revision_and_traffic_splits_ninety_ten_with_a_tag() {
    let dir = TempDir::new("local-split");
    dir.write("images.yaml", IMAGES);
    let blue = "    metadata: {name: split-blue}\n";
    dir.write("split.yaml", &hello("split", "blue", blue, ""));
    let local = Local::start(&dir.0);
    local
        .until("split ready", Duration::from_secs(30), |v| {
            ready(v, "split")
        })
        .await;
    assert_eq!(
        answer(&local, "split.default.example.com", Duration::from_secs(5)).await,
        "Hello blue!\n"
    );

    let green = "    metadata: {name: split-green}\n";
    let traffic = "  traffic:
  - {revisionName: split-blue, percent: 90}
  - {revisionName: split-green, percent: 10, tag: candidate}
";
    dir.write("split.yaml", &hello("split", "green", green, traffic));
    let view = local
        .until("the split", Duration::from_secs(30), |v| {
            ready(v, "split")
                && service(v, "split")["status"]["traffic"]
                    .as_array()
                    .map(Vec::len)
                    == Some(2)
        })
        .await;
    let status = &service(&view, "split")["status"];
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(status["latestCreatedRevisionName"], "split-green");
    assert_eq!(status["latestReadyRevisionName"], "split-green");
    assert_eq!(
        status["traffic"],
        serde_json::json!([
            {"revisionName": "split-blue", "percent": 90, "latestRevision": false},
            {"tag": "candidate", "revisionName": "split-green", "percent": 10, "latestRevision": false,
             "url": "http://candidate-split.default.example.com"},
        ])
    );
    // The tag's host reaches only its revision.
    for _ in 0..20 {
        assert_eq!(
            answer(
                &local,
                "candidate-split.default.example.com",
                Duration::from_secs(5)
            )
            .await,
            "Hello green!\n"
        );
    }
    // 1000 requests: green's share is 10% within 4 standard deviations (sd 9.5).
    let mut green = 0;
    for _ in 0..1000 {
        match answer(&local, "split.default.example.com", Duration::from_secs(5))
            .await
            .as_str()
        {
            "Hello green!\n" => green += 1,
            "Hello blue!\n" => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(
        (62..=138).contains(&green),
        "green answered {green} of 1000"
    );
    local.stop();
}

#[tokio::test]
async fn a_bad_edit_is_reported_and_what_runs_keeps_serving() {
    let dir = TempDir::new("local-bad");
    dir.write("images.yaml", IMAGES);
    dir.write("steady.yaml", &hello("steady", "Steady", "", ""));
    dir.write("moving.yaml", &hello("moving", "One", "", ""));
    let hpa = "    metadata: {annotations: {autoscaling.knative.dev/class: hpa.autoscaling.knative.dev, autoscaling.knative.dev/metric: cpu}}\n";
    dir.write("hpa.yaml", &hello("cpu", "Cpu", hpa, ""));
    let local = Local::start(&dir.0);
    let view = local
        .until("steady and moving ready", Duration::from_secs(30), |v| {
            ready(v, "steady") && ready(v, "moving")
        })
        .await;
    // The HPA class has no HPA here: the revision fails, saying so.
    let cpu = revision(&view, "cpu-00001");
    assert_eq!(condition(cpu, "Ready").0, "False", "{cpu:#}");
    let configured = condition(service(&view, "cpu"), "ConfigurationsReady");
    assert_eq!(configured, ("False".into(), "RevisionFailed".into()));
    let message = service(&view, "cpu")["status"]["conditions"][0]["message"].to_string();
    assert!(message.contains("HorizontalPodAutoscaler"), "{message}");

    // A Knative validation error in one file, an edit in another.
    dir.write(
        "steady.yaml",
        &hello("steady", "Changed", "", "").replace(
            "    spec:\n",
            "    spec:\n      containerConcurrency: 5000\n",
        ),
    );
    dir.write("moving.yaml", &hello("moving", "Two", "", ""));
    assert!(
        local.gw.wait_for_output(
            "expected 0 <= 5000 <= 1000: spec.template.spec.containerConcurrency",
            Duration::from_secs(20)
        ),
        "{}",
        local.gw.stdout_text()
    );
    assert!(local.gw.stdout_text().contains("steady.yaml"));
    local
        .until("moving's second revision", Duration::from_secs(30), |v| {
            service(v, "moving")["status"]["latestReadyRevisionName"] == "moving-00002"
        })
        .await;
    assert_eq!(
        answer(&local, "moving.default.example.com", Duration::from_secs(5)).await,
        "Hello Two!\n"
    );
    // What ran keeps running: the old template, one revision, still Ready.
    assert_eq!(
        answer(&local, "steady.default.example.com", Duration::from_secs(5)).await,
        "Hello Steady!\n"
    );
    let view = local.view().await;
    assert!(ready(&view, "steady"));
    assert_eq!(
        service(&view, "steady")["status"]["latestCreatedRevisionName"],
        "steady-00001"
    );
    local.stop();
}

#[tokio::test]
async fn a_claimed_domain_mapping_serves_its_service_and_an_unclaimed_one_says_why() {
    let dir = TempDir::new("local-domains");
    dir.write("images.yaml", IMAGES);
    dir.write("mapped.yaml", &hello("mapped", "Mapped", "", ""));
    dir.write(
        "domains.yaml",
        "apiVersion: networking.internal.knative.dev/v1alpha1
kind: ClusterDomainClaim
metadata: {name: app.example.org}
spec: {namespace: default}
---
apiVersion: serving.knative.dev/v1beta1
kind: DomainMapping
metadata: {name: app.example.org}
spec:
  ref: {name: mapped, kind: Service, apiVersion: serving.knative.dev/v1}
---
apiVersion: serving.knative.dev/v1beta1
kind: DomainMapping
metadata: {name: unclaimed.example.org}
spec:
  ref: {name: mapped, kind: Service, apiVersion: serving.knative.dev/v1}
",
    );
    let local = Local::start(&dir.0);
    let mapping = |v: &serde_json::Value, name: &str| {
        v["domainMappings"]
            .as_array()
            .and_then(|all| all.iter().find(|m| m["name"] == name).cloned())
            .unwrap_or_default()
    };
    let view = local
        .until("the claimed mapping ready", Duration::from_secs(30), |v| {
            condition(&mapping(v, "app.example.org"), "Ready").0 == "True"
        })
        .await;
    let claimed = mapping(&view, "app.example.org");
    assert_eq!(claimed["status"]["url"], "http://app.example.org");
    let unclaimed = mapping(&view, "unclaimed.example.org");
    assert_eq!(
        condition(&unclaimed, "DomainClaimed"),
        ("False".into(), "DomainAlreadyClaimed".into())
    );
    assert!(unclaimed["error"]
        .as_str()
        .unwrap()
        .contains("no ClusterDomainClaim found for domain \"unclaimed.example.org\""));
    // Through the gateway and back into its private listener, to the Service's revision.
    assert_eq!(
        answer(&local, "app.example.org", Duration::from_secs(10)).await,
        "Hello Mapped!\n"
    );
    let (status, _, _) = get_host(&local.gw, "public", "unclaimed.example.org", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    local.stop();
}

/// A container that exits before it is ready is started again (a Deployment keeps its
/// count), though the autoscaler has had no data to decide on.
#[tokio::test]
async fn an_instance_that_dies_before_it_is_ready_is_started_again() {
    let dir = TempDir::new("local-flaky");
    let marker = dir.0.join("started-once");
    dir.write(
        "flaky.yaml",
        &format!(
            "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: flaky}}
spec:
  template:
    spec:
      containers:
      - image: example.org/flaky
        command: [sh]
        args: ['-c', 'test -e {marker} || {{ touch {marker}; exit 3; }}; exec {hello}']
        env: [{{name: TARGET, value: again}}]
",
            marker = marker.display(),
            hello = bin_path("knoxy-helloworld").display()
        ),
    );
    let local = Local::start(&dir.0);
    local
        .until("flaky ready", Duration::from_secs(30), |v| {
            ready(v, "flaky")
        })
        .await;
    assert!(marker.exists(), "the first instance ran");
    assert_eq!(
        answer(&local, "flaky.default.example.com", Duration::from_secs(5)).await,
        "Hello again!\n"
    );
    let stdout = local.gw.stdout_text();
    assert!(
        stdout.contains("flaky-00001: instance") && stdout.contains("stopped"),
        "{stdout}"
    );
    local.stop();
}

/// §5 item 39, with a progress deadline of 1 s: given up 31 s after it began activating.
#[tokio::test]
async fn a_revision_that_never_turns_ready_is_given_up_after_its_progress_deadline() {
    let dir = TempDir::new("local-stuck");
    dir.write(
        "stuck.yaml",
        "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: stuck}
spec:
  template:
    metadata: {annotations: {serving.knative.dev/progress-deadline: 1s}}
    spec:
      containers: [{image: example.org/stuck, command: [sleep], args: ['1000']}]
",
    );
    let local = Local::start(&dir.0);
    let started = Instant::now();
    let view = local
        .until("timed out", Duration::from_secs(60), |v| {
            condition(revision(v, "stuck-00001"), "Active").1 == "TimedOut"
        })
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let rev = revision(&view, "stuck-00001");
    assert_eq!(rev["instances"], 0, "{rev:#}");
    assert_eq!(
        condition(rev, "ResourcesAvailable"),
        ("False".into(), "ProgressDeadlineExceeded".into())
    );
    assert_eq!(condition(rev, "Ready").0, "False");
    let stuck = service(&view, "stuck");
    assert_eq!(condition(stuck, "Ready").0, "False", "{stuck:#}");
    local.stop();
}

/// §5 item 40: with config-gc keeping nothing, a revision no Route uses is deleted; the
/// latest ready one and one annotated `serving.knative.dev/no-gc` are not.
#[tokio::test]
async fn config_gc_deletes_reserve_revisions_but_not_protected_ones() {
    let dir = TempDir::new("local-gc");
    dir.write(
        "config.yaml",
        &format!(
            "{IMAGES}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: config-gc, namespace: knative-serving}}
data:
  retain-since-create-time: disabled
  retain-since-last-active-time: disabled
  min-non-active-revisions: '0'
  max-non-active-revisions: '0'
"
        ),
    );
    dir.write("gc.yaml", &hello("gc", "One", "", ""));
    let local = Local::start(&dir.0);
    local
        .until("gc ready", Duration::from_secs(30), |v| ready(v, "gc"))
        .await;
    let keep = "    metadata: {annotations: {serving.knative.dev/no-gc: 'true'}}\n";
    dir.write("gc.yaml", &hello("gc", "Two", keep, ""));
    local
        .until("gc-00001 deleted", Duration::from_secs(30), |v| {
            revision(v, "gc-00001").is_null()
                && service(v, "gc")["status"]["latestReadyRevisionName"] == "gc-00002"
        })
        .await;
    assert_eq!(
        answer(&local, "gc.default.example.com", Duration::from_secs(5)).await,
        "Hello Two!\n"
    );
    dir.write("gc.yaml", &hello("gc", "Three", "", ""));
    local
        .until("gc-00002 reserve", Duration::from_secs(30), |v| {
            revision(v, "gc-00002")["routingState"] == "reserve"
        })
        .await;
    // Collection runs on every reconcile: a few more, and the no-gc one is still there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let view = local.view().await;
    assert_eq!(revision(&view, "gc-00002")["routingState"], "reserve");
    assert_eq!(revision(&view, "gc-00003")["routingState"], "active");
    assert!(view["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message"] == "default/gc-00001: deleted by config-gc"));
    local.stop();
}

/// §5 item 21 with `rollout-duration: 6s`: the new revision starts at 1 % and takes the rest
/// in steps, the Route `RolloutInProgress` meanwhile; every request is answered.
#[tokio::test]
async fn a_gradual_rollout_moves_traffic_in_steps() {
    let dir = TempDir::new("local-rollout");
    dir.write("images.yaml", IMAGES);
    let with_duration = |target: &str| {
        hello("roll", target, "", "").replace(
            "metadata: {name: roll}",
            "metadata: {name: roll, annotations: {serving.knative.dev/rollout-duration: 6s}}",
        )
    };
    dir.write("roll.yaml", &with_duration("One"));
    let local = Local::start(&dir.0);
    local
        .until("roll ready", Duration::from_secs(30), |v| ready(v, "roll"))
        .await;
    dir.write("roll.yaml", &with_duration("Two"));
    let mut shares = Vec::new();
    let mut reasons = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let view = local.view().await;
        let status = &service(&view, "roll")["status"];
        let traffic = status["traffic"].as_array().cloned().unwrap_or_default();
        let new = traffic
            .iter()
            .find(|t| t["revisionName"] == "roll-00002")
            .map_or(0, |t| t["percent"].as_i64().unwrap());
        if shares.last() != Some(&new) {
            shares.push(new);
        }
        reasons.insert(condition(service(&view, "roll"), "RoutesReady").1);
        let body = answer(&local, "roll.default.example.com", Duration::from_secs(5)).await;
        assert!(body == "Hello One!\n" || body == "Hello Two!\n", "{body}");
        if new == 100 && traffic.len() == 1 {
            assert!(ready(&view, "roll"));
            break;
        }
        assert!(Instant::now() < deadline, "shares so far {shares:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 1 %, then steps of 20 % a second, then all of it.
    assert_eq!(shares.first(), Some(&0));
    assert!(shares.contains(&1), "{shares:?}");
    assert!(
        shares.iter().filter(|p| (2..100).contains(*p)).count() >= 2,
        "{shares:?}"
    );
    assert!(reasons.contains("RolloutInProgress"), "{reasons:?}");
    local.stop();
}

/// §5 item 36: `initial-scale: 0` (allowed) starts no instance, yet the Service is Ready,
/// and its first request brings one up.
#[tokio::test]
async fn initial_scale_zero_starts_nothing_and_is_ready() {
    let dir = TempDir::new("local-initial-zero");
    dir.write(
        "config.yaml",
        &format!(
            "{IMAGES}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: config-autoscaler, namespace: knative-serving}}
data: {{allow-zero-initial-scale: 'true'}}
"
        ),
    );
    let lazy = "    metadata: {annotations: {autoscaling.knative.dev/initial-scale: '0'}}\n";
    dir.write("lazy.yaml", &hello("lazy", "Lazy", lazy, ""));
    let local = Local::start(&dir.0);
    let view = local
        .until("lazy ready", Duration::from_secs(30), |v| ready(v, "lazy"))
        .await;
    assert_eq!(revision(&view, "lazy-00001")["instances"], 0, "{view:#}");
    assert_eq!(
        answer(&local, "lazy.default.example.com", Duration::from_secs(10)).await,
        "Hello Lazy!\n"
    );
    local.stop();
}
