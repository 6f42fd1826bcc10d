//! Tests of the file source: documents in, objects and problems out; a directory read
//! again after each change; broken files and documents keep their objects' last good
//! versions; only regular files of bounded size are read.

use std::time::Duration;

use super::*;

// === Helpers ===

const GOOD: &str = r#"
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  annotations:
    networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev
spec:
  rules:
  - hosts: [hello.default.example.com]
    http:
      paths:
      - splits:
        - {serviceNamespace: default, serviceName: hello-00001, servicePort: 80, percent: 100}
---
apiVersion: v1
kind: Service
metadata: {name: hello-00001, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8012}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hello-00001-x
  labels: {kubernetes.io/service-name: hello-00001}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: http, port: 8012}]
---
"#;

/// A document holding Service `name` on `port`, with its `---`.
fn service(name: &str, port: u16) -> String {
    format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n")
}

fn load(text: &str) -> (Snapshot, Vec<FileError>) {
    let mut snap = Snapshot::default();
    let mut errors = Vec::new();
    add_documents(Path::new("app.yaml"), text, &mut snap, &mut errors);
    (snap, errors)
}

/// Each Service's port, by name.
fn ports(snap: &Snapshot) -> Vec<(String, u16)> {
    snap.services
        .values()
        .map(|s| {
            let port = s.spec.ports.first().map_or(0, |p| p.port);
            (s.metadata.name.clone(), port)
        })
        .collect()
}

fn named(pairs: &[(&str, u16)]) -> Vec<(String, u16)> {
    pairs.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect()
}

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("knoxy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// Replaces `name` at once (a new inode, as editors and `kubectl cp` do).
    fn write(&self, name: &str, text: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.0.join(name)).expect("rename");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// === Documents ===

#[test]
fn several_documents_of_several_kinds_load_into_one_snapshot() {
    let (snap, errors) = load(GOOD);
    assert_eq!(errors, []);
    assert!(snap.ingresses.contains_key("default/hello"));
    assert!(snap.services.contains_key("default/hello-00001"));
    assert!(
        snap.endpoint_slices.contains_key("default/hello-00001-x"),
        "a missing namespace means default"
    );
}

#[test]
fn a_wrong_type_names_file_document_object_and_field() {
    let (_, errors) = load(&GOOD.replace("servicePort: 80,", "servicePort: [80],"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0].to_string();
    assert!(
        e.starts_with("app.yaml: document 1: Ingress default/hello: spec.rules[0].http.paths[0].splits[0].servicePort: "),
        "{e}"
    );
}

#[test]
fn a_revision_loads_as_a_cluster_holds_it_and_an_out_of_range_one_names_its_field() {
    let revision = "apiVersion: serving.knative.dev/v1\nkind: Revision\nmetadata:\n  name: hello-00001\n  namespace: default\n  labels: {serving.knative.dev/service: hello}\nspec:\n  containerConcurrency: 10\n  timeoutSeconds: 300\n  containers:\n  - image: ghcr.io/knative/helloworld-go:latest\n    ports: [{containerPort: 8080, name: http1}]\n    readinessProbe: {successThreshold: 1, tcpSocket: {port: 0}}\nstatus:\n  observedGeneration: 1\n";
    let (snap, errors) = load(revision);
    assert_eq!(errors, []);
    let settings = snap.revisions["default/hello-00001"]
        .settings()
        .expect("valid");
    assert_eq!(settings.container_concurrency, 10);

    let (snap, errors) = load(&revision.replace("timeoutSeconds: 300", "timeoutSeconds: 601"));
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["app.yaml: document 1: Revision default/hello-00001: expected 0 <= 601 <= 600: spec.timeoutSeconds"]
    );
    assert!(snap.revisions.is_empty());
}

#[test]
fn an_invalid_ingress_is_loaded_for_derive_to_judge() {
    let (snap, errors) = load(&GOOD.replace("percent: 100", "percent: 60"));
    assert_eq!(
        errors,
        [],
        "derive names the field and keeps the last valid version"
    );
    assert!(snap.ingresses.contains_key("default/hello"));
}

#[test]
fn broken_yaml_and_unknown_objects_are_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "a syntax error",
            "apiVersion: v1\nkind: Service\nmetadata: {name: x\n",
            "app.yaml: document 1: did not find expected ',' or '}' at line 4 column 1, while parsing a flow mapping at line 3 column 11",
        ),
        (
            "an unknown kind",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
            "app.yaml: document 1: Deployment default/web: unsupported object apps/v1 Deployment",
        ),
        (
            "no name",
            "kind: Service\nmetadata: {}\n",
            "app.yaml: document 1: metadata.name: missing",
        ),
        (
            "metadata of the wrong type",
            "kind: Service\nmetadata: {name: x, creationTimestamp: [1]}\n",
            "app.yaml: document 1: metadata.creationTimestamp: invalid type: sequence, expected a string",
        ),
        (
            "the second document",
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nkind: Service\n",
            "app.yaml: document 2: metadata.name: missing",
        ),
    ];
    for (name, text, want) in cases {
        let (_, errors) = load(text);
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(got, [*want], "case: {name}");
    }
}

#[test]
fn documents_split_at_their_markers_and_directives_keep_the_file_whole() {
    assert_eq!(
        split_documents("a: 1\n---\nb: 2\n--- # c\nc: 3\r\n---\r\n"),
        Some(vec![
            "a: 1\n",
            "---\nb: 2\n",
            "--- # c\nc: 3\r\n",
            "---\r\n"
        ])
    );
    assert_eq!(
        split_documents("---\nkey: |\n  ---\n  text\n"),
        Some(vec!["---\nkey: |\n  ---\n  text\n"]),
        "an indented --- is content"
    );
    assert_eq!(split_documents(""), Some(vec![]));
    assert_eq!(split_documents("%YAML 1.2\n---\na: 1\n"), None);
    assert_eq!(split_documents("a: 1\n...\n---\nb: 2\n"), None);
}

#[test]
fn a_document_parsed_alone_is_named_as_the_whole_file_names_it() {
    let broken = "---\nkind: [\n";
    let cases: &[(&str, String)] = &[
        ("first", broken.to_owned() + &service("b", 81)),
        ("after two", service("a", 80) + &service("b", 81) + broken),
        (
            "after a comment",
            "# generated\n".to_owned() + &service("a", 80) + broken,
        ),
        (
            "after an empty document",
            "---\n".to_owned() + &service("a", 80) + broken,
        ),
        (
            "without a first marker",
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n".to_owned() + broken,
        ),
        (
            "a wrong type",
            service("a", 80)
                + "---\nkind: Service\napiVersion: v1\nmetadata: {name: x}\nspec: {ports: 5}\n",
        ),
    ];
    let file = Path::new("all.yaml");
    for (name, text) in cases {
        let docs = split_documents(text).expect("splits");
        let (_, alone, _) = parse_documents(file, text, &docs, Vec::new());
        let mut whole = Vec::new();
        add_documents(file, text, &mut Snapshot::default(), &mut whole);
        assert_eq!(alone, whole, "case: {name}");
        assert!(!alone.is_empty(), "case: {name}");
    }
}

// === A directory, read again ===

#[test]
fn a_directory_loads_sorted_yaml_files_only() {
    let dir = TempDir::new("files");
    std::fs::write(dir.0.join("a.yaml"), GOOD).expect("write");
    std::fs::write(dir.0.join("notes.txt"), "not yaml: [").expect("write");
    let loaded = load_dir(&dir.0);
    assert_eq!(loaded.errors, []);
    assert_eq!(loaded.snapshot.ingresses.len(), 1);
    std::fs::write(dir.0.join("b.yml"), "kind: [").expect("write");
    let loaded = load_dir(&dir.0);
    assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
    assert!(loaded.errors[0].file.ends_with("b.yml"));
    assert_eq!(
        loaded.snapshot.ingresses.len(),
        1,
        "a broken file does not hide the others, even on a first load"
    );
}

#[test]
fn a_rereading_reader_sees_changes_additions_and_removals() {
    let dir = TempDir::new("reader");
    std::fs::write(dir.0.join("a.yaml"), service("a", 80)).expect("write");
    let mut reader = DirReader::default();
    // What was read, and whether the reader says anything changed since the read before.
    let mut read = || {
        let loaded = reader.read(&dir.0);
        assert_eq!(loaded.errors, []);
        (ports(&loaded.snapshot), reader.changed())
    };
    assert_eq!(read(), (named(&[("a", 80)]), true));
    assert_eq!(read(), (named(&[("a", 80)]), false), "nothing changed");
    std::fs::write(dir.0.join("b.yaml"), service("b", 81)).expect("write");
    assert_eq!(read(), (named(&[("a", 80), ("b", 81)]), true));
    // Same length, new content: the inode or the modification time tells it changed.
    dir.write("a.yaml", &service("a", 90));
    assert_eq!(read(), (named(&[("a", 90), ("b", 81)]), true));
    assert_eq!(read(), (named(&[("a", 90), ("b", 81)]), false));
    std::fs::remove_file(dir.0.join("b.yaml")).expect("remove");
    assert_eq!(read(), (named(&[("a", 90)]), true));
    std::fs::write(dir.0.join("notes.txt"), "not read").expect("write");
    assert_eq!(read(), (named(&[("a", 90)]), false), "a file not read");
    // The directory cannot be listed, then can again with the same files: the error is gone.
    let away = dir.0.with_extension("away");
    std::fs::rename(&dir.0, &away).expect("move the directory away");
    let failed = reader.read(&dir.0);
    assert_eq!(failed.errors.len(), 1, "{:?}", failed.errors);
    assert!(reader.changed());
    std::fs::rename(&away, &dir.0).expect("move it back");
    let back = reader.read(&dir.0);
    assert_eq!((back.errors, reader.changed()), (vec![], true));
    reader.read(&dir.0);
    assert!(!reader.changed());
}

#[test]
fn an_edited_file_reparses_only_the_documents_that_changed() {
    let dir = TempDir::new("docs");
    dir.write(
        "all.yaml",
        &(service("a", 80) + &service("b", 81) + &service("c", 82)),
    );
    let mut reader = DirReader::default();
    let before = reader.read(&dir.0).snapshot;
    dir.write(
        "all.yaml",
        &(service("a", 80) + &service("b", 91) + &service("c", 82)),
    );
    let after = reader.read(&dir.0).snapshot;
    let same = |key: &str| Arc::ptr_eq(&before.services[key], &after.services[key]);
    assert!(
        same("default/a") && same("default/c"),
        "unchanged documents keep their objects"
    );
    assert!(!same("default/b"));
    assert_eq!(after.services["default/b"].spec.ports[0].port, 91);

    // Moved documents are found by their text.
    dir.write(
        "all.yaml",
        &(service("c", 82) + &service("a", 80) + &service("b", 91)),
    );
    let moved = reader.read(&dir.0).snapshot;
    assert!(Arc::ptr_eq(
        &after.services["default/c"],
        &moved.services["default/c"]
    ));
}

// === Broken files and documents keep their objects' last good versions ===

#[test]
fn a_broken_document_holds_back_only_its_own_objects() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "a syntax error",
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: b\n",
            "line",
        ),
        (
            "a wrong type",
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: x}]}\n",
            "Service default/b: spec.ports[0].port",
        ),
        (
            "an unknown kind",
            "---\napiVersion: v9\nkind: Service\nmetadata: {name: b}\n",
            "unsupported object",
        ),
    ];
    for (name, broken_b, says) in cases {
        let dir = TempDir::new("broken-doc");
        dir.write(
            "all.yaml",
            &(service("a", 80) + &service("b", 81) + &service("c", 82)),
        );
        let mut reader = DirReader::default();
        assert_eq!(reader.read(&dir.0).errors, [], "case: {name}");
        dir.write(
            "all.yaml",
            &(service("a", 90) + broken_b + &service("c", 92)),
        );
        let loaded = reader.read(&dir.0);
        assert_eq!(
            ports(&loaded.snapshot),
            named(&[("a", 90), ("b", 81), ("c", 92)]),
            "case: {name}: the other documents' edits go live, b keeps its last good version"
        );
        assert_eq!(loaded.errors.len(), 1, "case: {name}: {:?}", loaded.errors);
        let e = &loaded.errors[0];
        assert!(e.file.ends_with("all.yaml"), "case: {name}");
        assert_eq!(e.document, Some(2), "case: {name}");
        assert!(e.to_string().contains(says), "case: {name}: {e}");

        dir.write("all.yaml", &(service("a", 90) + &service("c", 92)));
        let fixed = reader.read(&dir.0);
        assert_eq!(fixed.errors, [], "case: {name}");
        assert_eq!(
            ports(&fixed.snapshot),
            named(&[("a", 90), ("c", 92)]),
            "case: {name}: once the file is good, b is gone as the file says"
        );
    }
}

#[test]
fn a_broken_file_holds_back_only_its_own_objects() {
    let dir = TempDir::new("broken-file");
    dir.write("x.yaml", &service("x", 80));
    dir.write("y.yaml", &(service("y", 81) + &service("z", 82)));
    let mut reader = DirReader::default();
    assert_eq!(reader.read(&dir.0).errors, []);
    dir.write("x.yaml", &service("x", 90));
    // A directive keeps the file whole, so the first syntax error stops it all.
    dir.write(
        "y.yaml",
        &("%YAML 1.2\n".to_owned() + &service("y", 91) + "---\nkind: [\n" + &service("z", 92)),
    );
    let loaded = reader.read(&dir.0);
    assert_eq!(
        ports(&loaded.snapshot),
        named(&[("x", 90), ("y", 91), ("z", 82)]),
        "x's edit goes live; y.yaml gives what it parsed and keeps the rest"
    );
    assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
    assert!(loaded.errors[0].file.ends_with("y.yaml"));
    assert_eq!(loaded.errors[0].document, Some(2));

    // Still broken on the next read: still the last good versions, still the error.
    dir.write("x.yaml", &service("x", 100));
    let again = reader.read(&dir.0);
    assert_eq!(
        ports(&again.snapshot),
        named(&[("x", 100), ("y", 91), ("z", 82)])
    );
    assert_eq!(again.errors, loaded.errors);

    std::fs::remove_file(dir.0.join("y.yaml")).expect("remove");
    let gone = reader.read(&dir.0);
    assert_eq!(gone.errors, []);
    assert_eq!(
        ports(&gone.snapshot),
        named(&[("x", 100)]),
        "a deleted file takes its objects"
    );
}

#[test]
fn a_file_that_cannot_be_read_keeps_its_objects() {
    let dir = TempDir::new("unreadable");
    dir.write("a.yaml", &service("a", 80));
    let mut reader = DirReader::default();
    assert_eq!(reader.read(&dir.0).errors, []);
    let file = std::fs::File::create(dir.0.join("a.yaml")).expect("create");
    // Sparse: no disk is used for the hole.
    file.set_len(MAX_FILE_BYTES + 1).expect("set_len");
    let loaded = reader.read(&dir.0);
    assert_eq!(ports(&loaded.snapshot), named(&[("a", 80)]));
    assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
    assert_eq!(
        loaded.errors[0].document, None,
        "a problem of the whole file"
    );
}

#[test]
fn a_file_that_was_never_good_gives_what_parsed_and_its_errors() {
    let dir = TempDir::new("never-good");
    dir.write("a.yaml", &(service("a", 80) + "---\nkind: [\n"));
    dir.write("b.yaml", &service("b", 81));
    let loaded = load_dir(&dir.0);
    assert_eq!(ports(&loaded.snapshot), named(&[("a", 80), ("b", 81)]));
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.errors[0].document, Some(2));
}

#[test]
fn a_directory_that_cannot_be_listed_keeps_everything() {
    let dir = TempDir::new("unlisted");
    dir.write("a.yaml", &service("a", 80));
    let mut reader = DirReader::default();
    assert_eq!(reader.read(&dir.0).errors, []);
    std::fs::remove_dir_all(&dir.0).expect("remove");
    let loaded = reader.read(&dir.0);
    assert_eq!(ports(&loaded.snapshot), named(&[("a", 80)]));
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.errors[0].file, dir.0);
}

// === Only regular files of bounded size ===

/// Reads `dir` on another thread, so that a read that blocks fails the test instead of hanging it.
fn read_within_a_second(dir: &Path) -> Loaded {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(load_dir(&dir));
    });
    rx.recv_timeout(Duration::from_secs(1))
        .expect("the read does not block")
}

/// The only error of a load, which must name `file`.
fn only_error(loaded: &Loaded, file: &str) -> String {
    assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
    assert!(loaded.errors[0].file.ends_with(file), "{:?}", loaded.errors);
    loaded.errors[0].message.clone()
}

#[test]
fn a_fifo_is_refused_without_blocking_the_read() {
    let dir = TempDir::new("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(dir.0.join("pipe.yaml"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let message = only_error(&read_within_a_second(&dir.0), "pipe.yaml");
    assert!(message.contains("not a regular file"), "{message}");
}

#[test]
fn a_symlink_to_a_device_is_refused_and_one_to_a_file_is_followed() {
    let dir = TempDir::new("symlink");
    std::os::unix::fs::symlink("/dev/zero", dir.0.join("zero.yaml")).expect("symlink");
    let message = only_error(&read_within_a_second(&dir.0), "zero.yaml");
    assert!(message.contains("not a regular file"), "{message}");

    std::fs::remove_file(dir.0.join("zero.yaml")).expect("remove");
    std::fs::write(dir.0.join("real.txt"), service("a", 80)).expect("write");
    std::os::unix::fs::symlink(dir.0.join("real.txt"), dir.0.join("link.yaml")).expect("symlink");
    let loaded = read_within_a_second(&dir.0);
    assert_eq!(loaded.errors, []);
    assert_eq!(loaded.snapshot.services.len(), 1);
}

#[test]
fn a_directory_named_like_a_file_is_refused() {
    let dir = TempDir::new("subdir");
    std::fs::create_dir(dir.0.join("sub.yaml")).expect("mkdir");
    let message = only_error(&read_within_a_second(&dir.0), "sub.yaml");
    assert!(message.contains("not a regular file"), "{message}");
}

#[test]
fn a_file_above_the_limit_is_refused_with_the_limit_named() {
    let dir = TempDir::new("large");
    let file = std::fs::File::create(dir.0.join("big.yaml")).expect("create");
    file.set_len(MAX_FILE_BYTES + 1).expect("set_len");
    let message = only_error(&read_within_a_second(&dir.0), "big.yaml");
    assert!(message.contains(&MAX_FILE_BYTES.to_string()), "{message}");
    file.set_len(0).expect("set_len");
    std::fs::write(dir.0.join("big.yaml"), service("a", 80)).expect("write");
    assert_eq!(read_within_a_second(&dir.0).snapshot.services.len(), 1);
}

#[test]
fn a_bounded_read_stops_one_byte_past_the_limit() {
    // /dev/zero never ends: only the bound stops it (the metadata check is skipped here).
    let zero = std::fs::File::open("/dev/zero").expect("/dev/zero");
    let error = read_at_most(zero, 0, 1024).expect_err("endless");
    assert!(error.contains("1024"), "{error}");
    assert_eq!(read_at_most(&b"abc"[..], 3, 3), Ok("abc".to_owned()));
    assert!(read_at_most(&b"abcd"[..], 3, 3).is_err());
}

// === Watching ===

#[test]
fn changes_are_loaded_and_failures_reported_without_stopping_the_watch() {
    let dir = TempDir::new("watch");
    let (tx, rx) = mpsc::channel();
    let count = |l: Loaded| (l.snapshot.services.len(), l.errors.len());
    let (mut watch, first) = watch(&dir.0).expect("watch starts");
    assert_eq!(
        count(first),
        (0, 0),
        "the first load is the directory as it is"
    );
    watch
        .follow(move |l| {
            let _ = tx.send(count(l));
        })
        .expect("follows");
    let wait_for = |want: (usize, usize)| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let got = rx.recv_timeout(left).expect("a load within 10 s");
            if got == want {
                return;
            }
        }
    };
    dir.write("a.yaml", &service("a", 80));
    wait_for((1, 0));
    dir.write("b.yaml", "kind: [");
    wait_for((1, 1));
    std::fs::remove_file(dir.0.join("b.yaml")).expect("remove");
    wait_for((1, 0));
}

#[test]
fn the_shipped_examples_load_and_every_ingress_in_them_is_ready() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut checked = 0;
    for dir in std::fs::read_dir(&examples).expect("deploy/examples") {
        let dir = dir.expect("an entry").path();
        // `knoxy local`'s input (Services), checked by the local crate.
        if dir.ends_with("local") {
            continue;
        }
        let Loaded {
            snapshot: snap,
            errors,
        } = load_dir(&dir);
        assert_eq!(errors, [], "{}", dir.display());
        let out = crate::derive::derive(&snap, &crate::derive::DeriveConfig::default());
        assert!(!out.status.is_empty(), "{}: no KIngress", dir.display());
        for (name, status) in &out.status {
            assert!(
                matches!(status, crate::derive::IngressStatus::Ready { .. }),
                "{}: {name}: {status:?}",
                dir.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 2, "hello and revision");
}

#[test]
fn revisions_survive_the_merge_of_files() {
    let dir = TempDir::new("merge");
    dir.write(
        "a.yaml",
        "apiVersion: serving.knative.dev/v1\nkind: Revision\nmetadata: {name: r, namespace: n}\n",
    );
    dir.write("b.yaml", GOOD);
    let loaded = load_dir(&dir.0);
    assert_eq!(loaded.errors, []);
    assert!(loaded.snapshot.revisions.contains_key("n/r"));
}
