use super::*;

fn conditions(c: &[Condition]) -> Vec<(&str, Status, &str)> {
    c.iter()
        .map(|c| (c.kind, c.status, c.reason.as_str()))
        .collect()
}

fn traffic(rev: &str) -> Vec<TrafficStatus> {
    vec![TrafficStatus {
        tag: None,
        revision_name: rev.to_owned(),
        percent: 100,
        latest_revision: true,
        url: None,
    }]
}

const URL: &str = "http://hello.default.example.com";
const ADDRESS: &str = "http://hello.default.svc.cluster.local";

/// `hello`'s status at `generation` from its Configuration's latest created, ready and
/// failure, and its Route's error, programmed traffic and rollout.
fn service(
    generation: u64,
    [latest_created, latest_ready, latest_failed]: [Option<&str>; 3],
    error: Option<&TrafficError>,
    traffic: Option<&[TrafficStatus]>,
    rolling: bool,
) -> ServiceStatus {
    service_status(
        generation,
        &ConfigurationFacts {
            latest_created,
            latest_ready,
            latest_failed,
        },
        &RouteFacts {
            url: URL,
            address: ADDRESS,
            error,
            traffic,
            rolling,
        },
    )
}

#[test]
fn a_ready_service_names_its_revision_everywhere() {
    let t = traffic("hello-00001");
    let s = service(
        1,
        [Some("hello-00001"), Some("hello-00001"), None],
        None,
        Some(&t),
        false,
    );
    assert_eq!(
        conditions(&s.conditions),
        [
            ("ConfigurationsReady", Status::True, ""),
            ("Ready", Status::True, ""),
            ("RoutesReady", Status::True, ""),
        ]
    );
    let json = serde_json::to_value(&s).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "observedGeneration": 1,
            "url": URL,
            "address": {"url": ADDRESS},
            "latestCreatedRevisionName": "hello-00001",
            "latestReadyRevisionName": "hello-00001",
            "traffic": [{"revisionName": "hello-00001", "percent": 100, "latestRevision": true}],
            "conditions": [
                {"type": "ConfigurationsReady", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "RoutesReady", "status": "True"},
            ],
        })
    );
}

/// §5 item 16: a first revision still starting.
#[test]
fn a_first_revision_starting_has_a_url_but_no_address() {
    let e = TrafficError {
        status: Status::Unknown,
        reason: "RevisionMissing",
        message: "Configuration \"hello\" is waiting for a Revision to become ready.".into(),
    };
    let s = service(1, [Some("hello-00001"), None, None], Some(&e), None, false);
    assert_eq!(s.url, URL);
    assert_eq!(s.address, None);
    assert!(s.traffic.is_empty());
    assert_eq!(
        conditions(&s.conditions),
        [
            ("ConfigurationsReady", Status::Unknown, ""),
            ("Ready", Status::Unknown, ""),
            ("RoutesReady", Status::Unknown, "RevisionMissing"),
        ]
    );
    let routes = &s.conditions[2];
    assert_eq!(routes.message, e.message);
}

/// §5 item 17: a new revision whose container exits; the old one keeps the traffic.
#[test]
fn a_failed_new_revision_fails_the_configuration_and_keeps_the_old_traffic() {
    let t = traffic("hello-00001");
    let s = service(
        2,
        [
            Some("hello-00002"),
            Some("hello-00001"),
            Some("exit status: 1"),
        ],
        None,
        Some(&t),
        false,
    );
    assert_eq!(
        conditions(&s.conditions),
        [
            ("ConfigurationsReady", Status::False, "RevisionFailed"),
            ("Ready", Status::False, "RevisionFailed"),
            ("RoutesReady", Status::True, ""),
        ]
    );
    assert_eq!(
        s.conditions[0].message,
        "Revision \"hello-00002\" failed with message: exit status: 1."
    );
    assert_eq!(s.traffic, t);
    assert_ne!(s.latest_created_revision_name, s.latest_ready_revision_name);
}

/// §5 item 18: a pinned revision that does not exist; what was programmed stays.
#[test]
fn a_missing_pinned_revision_is_a_false_route_and_the_old_traffic_stays() {
    let t = traffic("hello-00001");
    let e = TrafficError {
        status: Status::False,
        reason: "RevisionMissing",
        message: "Revision \"x\" referenced in traffic not found.".into(),
    };
    let s = service(
        2,
        [Some("hello-00001"), Some("hello-00001"), None],
        Some(&e),
        Some(&t),
        false,
    );
    assert_eq!(
        conditions(&s.conditions),
        [
            ("ConfigurationsReady", Status::True, ""),
            ("Ready", Status::False, "RevisionMissing"),
            ("RoutesReady", Status::False, "RevisionMissing"),
        ]
    );
    assert_eq!(s.traffic, t);
    assert!(s.address.is_some());
}

/// §5 item 20: a revision at zero is Ready, not Active.
#[test]
fn a_revision_at_zero_is_ready_and_not_active() {
    let s = revision_status(&Health::Healthy, Activity::NoTraffic, 0, Some(0));
    assert_eq!(
        conditions(&s.conditions),
        [
            ("Active", Status::False, "NoTraffic"),
            ("ContainerHealthy", Status::True, ""),
            ("Ready", Status::True, ""),
            ("ResourcesAvailable", Status::True, ""),
        ]
    );
    assert_eq!(s.actual_replicas, 0);
    let json = serde_json::to_value(&s).expect("serializes");
    assert_eq!(json["actualReplicas"], 0);
    assert_eq!(json["desiredReplicas"], 0);
}

#[test]
fn revision_readiness_follows_its_containers() {
    let table = [
        (
            Health::Deploying,
            Activity::Queued,
            Status::Unknown,
            "Deploying",
        ),
        (
            Health::Failed("exit status: 3".into()),
            Activity::NoTraffic,
            Status::False,
            "ExitCode",
        ),
        (Health::Healthy, Activity::Active, Status::True, ""),
    ];
    for (health, activity, status, reason) in table {
        let s = revision_status(&health, activity, 1, Some(1));
        let ready = s
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .expect("Ready");
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (status, reason),
            "{health:?}"
        );
    }
    let queued = revision_status(&Health::Deploying, Activity::Queued, 0, Some(1));
    assert_eq!(queued.conditions[0].reason, "Queued");
}

#[test]
fn a_configuration_is_ready_once_its_latest_created_is_its_latest_ready() {
    let table = [
        ((Some("a-00002"), Some("a-00001"), None), Status::Unknown),
        ((Some("a-00002"), Some("a-00002"), None), Status::True),
        (
            (Some("a-00002"), Some("a-00001"), Some("boom")),
            Status::False,
        ),
        ((Some("a-00001"), None, Some("boom")), Status::False),
        ((None, None, None), Status::Unknown),
    ];
    for ((latest_created, latest_ready, latest_failed), want) in table {
        let c = ConfigurationFacts {
            latest_created,
            latest_ready,
            latest_failed,
        };
        assert_eq!(configuration_ready(&c).status, want, "{c:?}");
    }
}

/// §4.4: while a gradual rollout moves traffic, the Route is not yet Ready.
#[test]
fn a_rollout_in_progress_keeps_the_route_unknown() {
    let t = traffic("hello-00002");
    let s = service(
        2,
        [Some("hello-00002"), Some("hello-00002"), None],
        None,
        Some(&t),
        true,
    );
    assert_eq!(
        conditions(&s.conditions)[2],
        ("RoutesReady", Status::Unknown, "RolloutInProgress")
    );
    assert_eq!(
        s.conditions[2].message,
        "A gradual rollout of the latest revision(s) is in progress."
    );
}
