//! Knative's traffic validation wording (contract §5 item 6), flattening and
//! `status.traffic` (Knative's `traffic_test.go` example, as the contract gives it).

use super::*;

fn t(
    tag: Option<&str>,
    revision: Option<&str>,
    config: Option<&str>,
    percent: Option<i64>,
) -> TrafficTarget {
    TrafficTarget {
        tag: tag.map(str::to_owned),
        revision_name: revision.map(str::to_owned),
        configuration_name: config.map(str::to_owned),
        percent,
        ..TrafficTarget::default()
    }
}

#[test]
fn bad_traffic_is_reported_in_knatives_words() {
    let path = "spec.traffic";
    let cases: Vec<(Vec<TrafficTarget>, &str)> = vec![
        (vec![t(None, Some("a"), None, Some(90))], "Traffic targets sum to 90, want 100: spec.traffic"),
        (
            vec![t(Some("t"), Some("a"), None, Some(50)), t(Some("t"), Some("b"), None, Some(50))],
            "Multiple definitions for \"t\": spec.traffic[0].tag, spec.traffic[1].tag",
        ),
        (
            vec![t(None, None, Some("hello"), Some(100))],
            "must not set the field(s): spec.traffic[0].configurationName",
        ),
        (
            vec![TrafficTarget {
                latest_revision: Some(true),
                ..t(None, Some("x"), None, Some(100))
            }],
            "may not set revisionName \"x\" when latestRevision is true: spec.traffic[0].latestRevision",
        ),
        (vec![t(Some("Bad_Tag"), Some("a"), None, Some(100))], "invalid value: Bad_Tag: spec.traffic[0].tag"),
    ];
    for (traffic, want) in cases {
        assert_eq!(validate(&traffic, path), [want], "{traffic:?}");
    }
    assert!(validate(&[], path).is_empty(), "no traffic: the default");
}

#[test]
fn a_services_traffic_is_defaulted_as_knative_defaults_it() {
    let d = defaulted(&[], "hello");
    assert_eq!(
        d,
        [TrafficTarget {
            configuration_name: Some("hello".into()),
            latest_revision: Some(true),
            percent: Some(100),
            ..TrafficTarget::default()
        }]
    );
    let d = defaulted(
        &[
            t(None, Some("hello-00001"), None, Some(90)),
            t(Some("c"), None, None, Some(10)),
        ],
        "hello",
    );
    assert_eq!(
        (d[0].latest_revision, d[1].latest_revision),
        (Some(false), Some(true))
    );
    assert_eq!(d[1].configuration_name.as_deref(), Some("hello"));
    assert_eq!(
        defaulted(&[t(Some("x"), Some("r"), None, None)], "hello")[0].percent,
        Some(0)
    );
}

fn ready(config: &str, service: Option<&str>) -> RevisionState {
    RevisionState {
        configuration: config.into(),
        service: service.map(str::to_owned),
        ready: Status::True,
        h2c: false,
    }
}

#[test]
fn status_traffic_is_knatives() {
    let revisions = BTreeMap::from([
        ("old".to_owned(), ready("config", None)),
        ("new".to_owned(), ready("config", None)),
        ("nice-00007".to_owned(), ready("nice", None)),
    ]);
    let configurations = BTreeMap::from([(
        "nice".to_owned(),
        ConfigurationState {
            latest_ready: Some("nice-00007".into()),
            ready: Status::True,
        },
    )]);
    let spec = vec![
        t(None, Some("old"), None, Some(100)),
        t(Some("beta"), Some("new"), None, None),
        TrafficTarget {
            latest_revision: Some(true),
            ..t(Some("alpha"), None, Some("nice"), None)
        },
    ];
    let traffic = defaulted(&spec, "unused");
    let url = |tag: &str| format!("http://{tag}-test-route.test.example.com");
    let (targets, status) =
        flatten(&traffic, None, &configurations, &revisions, url).expect("assigned");
    assert_eq!(targets.len(), 3);
    let entry = |tag: Option<&str>, rev: &str, percent, latest, url: Option<&str>| TrafficStatus {
        tag: tag.map(str::to_owned),
        revision_name: rev.into(),
        percent,
        latest_revision: latest,
        url: url.map(str::to_owned),
    };
    assert_eq!(
        status,
        [
            entry(None, "old", 100, false, None),
            entry(
                Some("beta"),
                "new",
                0,
                false,
                Some("http://beta-test-route.test.example.com")
            ),
            entry(
                Some("alpha"),
                "nice-00007",
                0,
                true,
                Some("http://alpha-test-route.test.example.com")
            ),
        ]
    );
}

#[test]
fn three_entries_for_one_configuration_collapse_to_one() {
    let revisions = BTreeMap::from([("hello-00001".to_owned(), ready("hello", Some("hello")))]);
    let configurations = BTreeMap::from([(
        "hello".to_owned(),
        ConfigurationState {
            latest_ready: Some("hello-00001".into()),
            ready: Status::True,
        },
    )]);
    let traffic = defaulted(
        &[
            t(None, None, None, Some(42)),
            t(None, None, None, Some(16)),
            t(None, None, None, Some(42)),
        ],
        "hello",
    );
    let (_, status) = flatten(&traffic, Some("hello"), &configurations, &revisions, |_| {
        String::new()
    })
    .expect("ok");
    assert_eq!(status.len(), 1);
    assert_eq!((status[0].percent, status[0].latest_revision), (100, true));
}

#[test]
fn traffic_that_cannot_be_assigned_says_why() {
    let mut revisions = BTreeMap::from([
        ("hello-00001".to_owned(), ready("hello", Some("hello"))),
        ("other-00001".to_owned(), ready("other", Some("other"))),
    ]);
    revisions.insert(
        "hello-00002".into(),
        RevisionState {
            ready: Status::Unknown,
            ..ready("hello", Some("hello"))
        },
    );
    let starting = BTreeMap::from([(
        "hello".to_owned(),
        ConfigurationState {
            latest_ready: None,
            ready: Status::Unknown,
        },
    )]);
    let go = |spec: &[TrafficTarget], configs: &BTreeMap<String, ConfigurationState>| {
        flatten(
            &defaulted(spec, "hello"),
            Some("hello"),
            configs,
            &revisions,
            |_| String::new(),
        )
        .expect_err("not assigned")
    };
    let e = go(&[], &starting);
    assert_eq!((e.status, e.reason), (Status::Unknown, "RevisionMissing"));
    assert_eq!(
        e.message,
        "Configuration \"hello\" is waiting for a Revision to become ready."
    );
    let failed = BTreeMap::from([(
        "hello".to_owned(),
        ConfigurationState {
            latest_ready: None,
            ready: Status::False,
        },
    )]);
    assert_eq!(
        go(&[], &failed).message,
        "Configuration \"hello\" does not have any ready Revision."
    );
    let e = go(&[t(None, Some("x"), None, Some(100))], &starting);
    assert_eq!(
        (e.status, e.reason, e.message.as_str()),
        (
            Status::False,
            "RevisionMissing",
            "Revision \"x\" referenced in traffic not found."
        )
    );
    let e = go(&[t(None, Some("other-00001"), None, Some(100))], &starting);
    assert_eq!(e.reason, "RevisionNotOwned");
    assert_eq!(
        e.message,
        "Revision \"other-00001\" belongs to Service \"other\", not Service \"hello\"."
    );
    let e = go(&[t(None, Some("hello-00002"), None, Some(100))], &starting);
    assert_eq!(e.message, "Revision \"hello-00002\" is not yet ready.");
    // A failure beats a revision still starting.
    let e = go(
        &[
            t(None, Some("hello-00002"), None, Some(50)),
            t(None, Some("x"), None, Some(50)),
        ],
        &starting,
    );
    assert_eq!(e.status, Status::False);
}

#[test]
fn tags_are_dns_labels() {
    for ok in ["a", "candidate", "v-2"] {
        assert!(dns1035(ok), "{ok}");
    }
    for bad in ["", "2a", "A", "a-", "a_b", &"a".repeat(64)] {
        assert!(!dns1035(bad), "{bad}");
    }
}
