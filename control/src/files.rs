//! The file source: a directory of YAML files (several documents each allowed) holding the
//! same objects a cluster would (KIngress, Service, EndpointSlice, Secret), read into a
//! [`Snapshot`]. Every problem names the file, the object and the field; the caller keeps
//! serving its last good table when there is any.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::derive::Snapshot;
use crate::kingress::{KIngress, ObjectMeta};
use crate::validate;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: PathBuf,
    /// `Kind namespace/name`, or `document N` when the object cannot be named.
    pub object: String,
    /// `field: problem`, or the YAML error with its line.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.object,
            self.message
        )
    }
}

impl std::error::Error for FileError {}

/// Reads every `*.yaml`/`*.yml` file of `dir` (sorted, not recursive).
pub fn load_dir(dir: &Path) -> Result<Snapshot, Vec<FileError>> {
    DirReader::default().read(dir)
}

/// Reads a directory again and again, parsing only the files that changed since the last
/// read (a file is unchanged while its inode, length and modification time are), and in a
/// changed file only the documents whose text changed.
#[derive(Default)]
pub struct DirReader {
    cache: HashMap<PathBuf, Parsed>,
}

/// Inode, length, modification and change times: a file with the same stamp is unchanged
/// (the change time also moves on a chmod and on copies that keep the modification time).
type Stamp = (u64, u64, Option<SystemTime>, (i64, i64));

struct Parsed {
    stamp: Stamp,
    snap: Snapshot,
    errors: Vec<FileError>,
    /// Each document's text and its objects, in file order (empty when parsed whole).
    docs: Vec<(Box<str>, Snapshot)>,
}

impl DirReader {
    pub fn read(&mut self, dir: &Path) -> Result<Snapshot, Vec<FileError>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect(),
            Err(e) => return Err(vec![error(dir, "directory", e.to_string())]),
        };
        files.sort();
        let mut cache = HashMap::with_capacity(files.len());
        let mut snap = Snapshot::default();
        let mut errors = Vec::new();
        for file in files {
            let stamp = std::fs::metadata(&file)
                .map(|m| {
                    (
                        m.ino(),
                        m.len(),
                        m.modified().ok(),
                        (m.ctime(), m.ctime_nsec()),
                    )
                })
                .ok();
            // A file that had problems is read again every time: cheap, and never stuck.
            let parsed = match (self.cache.remove(&file), stamp) {
                (Some(p), Some(stamp)) if p.stamp == stamp && p.errors.is_empty() => p,
                (previous, stamp) => parse_file(&file, stamp.unwrap_or_default(), previous),
            };
            merge(&mut snap, &parsed.snap);
            errors.extend(parsed.errors.iter().cloned());
            cache.insert(file, parsed);
        }
        // Files that are gone leave the cache with their objects.
        self.cache = cache;
        if errors.is_empty() {
            Ok(snap)
        } else {
            Err(errors)
        }
    }
}

fn parse_file(file: &Path, stamp: Stamp, previous: Option<Parsed>) -> Parsed {
    let text = match read_bounded(file) {
        Ok(text) => text,
        Err(e) => {
            return Parsed {
                stamp,
                snap: Snapshot::default(),
                errors: vec![error(file, "file", e)],
                docs: Vec::new(),
            }
        }
    };
    if let Some(parsed) = split_documents(&text).and_then(|d| parse_documents(file, &d, previous)) {
        return Parsed { stamp, ..parsed };
    }
    // Parsed whole: errors then carry the document numbers and lines of the whole file.
    let mut snap = Snapshot::default();
    let mut errors = Vec::new();
    add_documents(file, &text, &mut snap, &mut errors);
    Parsed {
        stamp,
        snap,
        errors,
        docs: Vec::new(),
    }
}

/// The file's objects, each document parsed on its own or reused from `previous` when its
/// text is unchanged (the same objects, shared); None at the first problem, which the whole
/// file's parse then reports.
fn parse_documents(file: &Path, docs: &[&str], previous: Option<Parsed>) -> Option<Parsed> {
    let mut parsed = Parsed {
        stamp: Default::default(),
        snap: Snapshot::default(),
        errors: Vec::new(),
        docs: Vec::with_capacity(docs.len()),
    };
    // Most documents of an edited file are where they were; the rest are found by text.
    let mut at_place: Vec<Option<(Box<str>, Snapshot)>> = previous
        .map(|p| p.docs.into_iter().map(Some).collect())
        .unwrap_or_default();
    let mut by_text: Option<HashMap<Box<str>, Snapshot>> = None;
    for (i, doc) in docs.iter().enumerate() {
        let in_place = at_place
            .get_mut(i)
            .filter(|slot| slot.as_ref().is_some_and(|(text, _)| **text == **doc))
            .and_then(Option::take);
        let (text, objects) = match in_place {
            Some(kept) => kept,
            None => {
                let moved = by_text
                    .get_or_insert_with(|| at_place.iter_mut().filter_map(Option::take).collect())
                    .remove(*doc);
                let objects = match moved {
                    Some(objects) => objects,
                    None => {
                        let mut objects = Snapshot::default();
                        let mut errors = Vec::new();
                        add_documents(file, doc, &mut objects, &mut errors);
                        if !errors.is_empty() {
                            return None;
                        }
                        objects
                    }
                };
                ((*doc).into(), objects)
            }
        };
        merge(&mut parsed.snap, &objects);
        parsed.docs.push((text, objects));
    }
    Some(parsed)
}

/// The documents of a YAML stream, split at its `---` lines (which YAML forbids inside any
/// content), each with its marker. None for streams with directives or `...` ends, which
/// are parsed whole.
fn split_documents(text: &str) -> Option<Vec<&str>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare.starts_with('%') || bare == "..." || bare.starts_with("... ") {
            return None;
        }
        let marker = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if marker && at > start {
            docs.push(&text[start..at]);
            start = at;
        }
        at += line.len();
    }
    if at > start {
        docs.push(&text[start..at]);
    }
    Some(docs)
}

/// The largest file read: far above any real configuration, far below what would hurt.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The text of a regular file of at most [`MAX_FILE_BYTES`]. Anything else (a FIFO, a
/// device, a directory, also behind a symlink) is refused without blocking or reading it.
fn read_bounded(file: &Path) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Checked before opening, since opening some devices acts on them.
    regular_and_small(&std::fs::metadata(file).map_err(|e| e.to_string())?)?;
    // Non-blocking, so that a FIFO swapped in after the check cannot hang the open.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(file)
        .map_err(|e| e.to_string())?;
    let len = regular_and_small(&opened.metadata().map_err(|e| e.to_string())?)?;
    read_at_most(opened, len, MAX_FILE_BYTES)
}

/// The file's length, if it is a regular file within the limit.
fn regular_and_small(meta: &std::fs::Metadata) -> Result<u64, String> {
    if !meta.is_file() {
        return Err(
            "not a regular file (only regular files, or symlinks to them, are read)".into(),
        );
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(MAX_FILE_BYTES));
    }
    Ok(meta.len())
}

/// At most `limit` bytes of text; one byte more means the file grew while it was read.
fn read_at_most(reader: impl std::io::Read, expected: u64, limit: u64) -> Result<String, String> {
    use std::io::Read as _;
    let mut bytes = Vec::with_capacity(usize::try_from(expected.min(limit)).unwrap_or(0));
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))
}

fn too_large(limit: u64) -> String {
    format!(
        "larger than the limit of {limit} bytes ({} MiB)",
        limit >> 20
    )
}

/// Later files win for the same `namespace/name`, as if read one after the other.
fn merge(into: &mut Snapshot, from: &Snapshot) {
    into.ingresses.extend(
        from.ingresses
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v))),
    );
    into.services.extend(
        from.services
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v))),
    );
    into.endpoint_slices.extend(
        from.endpoint_slices
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v))),
    );
    into.secrets
        .extend(from.secrets.iter().map(|(k, v)| (k.clone(), Arc::clone(v))));
}

/// Adds the objects of one file's text to `snap`.
pub fn add_documents(file: &Path, text: &str, snap: &mut Snapshot, errors: &mut Vec<FileError>) {
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = match serde_norway::Value::deserialize(doc) {
            Ok(serde_norway::Value::Null) => continue, // an empty document (`---` at the end)
            Ok(v) => v,
            Err(e) => {
                errors.push(error(file, &format!("document {}", i + 1), e.to_string()));
                // The YAML stream cannot be resumed after a syntax error.
                return;
            }
        };
        if let Err(e) = add_object(value, snap) {
            errors.push(FileError {
                file: file.to_owned(),
                object: e.0.unwrap_or_else(|| format!("document {}", i + 1)),
                message: e.1,
            });
        }
    }
}

/// (the object's name if known, the problem)
struct ObjectError(Option<String>, String);

fn add_object(value: serde_norway::Value, snap: &mut Snapshot) -> Result<(), ObjectError> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Head {
        api_version: String,
        kind: String,
        metadata: ObjectMeta,
    }
    let head: Head = serde_norway::from_value(value.clone()).unwrap_or_default();
    let named = format!(
        "{} {}/{}",
        head.kind, head.metadata.namespace, head.metadata.name
    );
    let fail = |message: String| ObjectError(Some(named.clone()), message);
    if head.metadata.name.is_empty() {
        return Err(ObjectError(None, "metadata.name: missing".to_owned()));
    }
    match (head.api_version.as_str(), head.kind.as_str()) {
        ("networking.internal.knative.dev/v1alpha1", "Ingress") => {
            let mut ingress: KIngress = typed(value).map_err(fail)?;
            namespace(&mut ingress.metadata);
            validate::validate(&ingress).map_err(|errs| {
                fail(
                    errs.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
            snap.ingresses
                .insert(ingress.metadata.key(), Arc::new(ingress));
        }
        ("v1", "Service") => {
            let mut o: crate::k8s::Service = typed(value).map_err(fail)?;
            namespace(&mut o.metadata);
            snap.services.insert(o.metadata.key(), Arc::new(o));
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let mut o: crate::k8s::EndpointSlice = typed(value).map_err(fail)?;
            namespace(&mut o.metadata);
            snap.endpoint_slices.insert(o.metadata.key(), Arc::new(o));
        }
        ("v1", "Secret") => {
            let mut o: crate::k8s::Secret = typed(value).map_err(fail)?;
            namespace(&mut o.metadata);
            snap.secrets.insert(o.metadata.key(), Arc::new(o));
        }
        ("", _) | (_, "") => return Err(fail("apiVersion and kind are required".to_owned())),
        (api, kind) => return Err(fail(format!("unsupported object {api} {kind}"))),
    }
    Ok(())
}

/// Deserializes with the path of the failing field (`spec.rules[0].http.paths[0].splits`).
fn typed<T: DeserializeOwned>(value: serde_norway::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// Objects without a namespace land in `default`, as `kubectl apply` would put them.
fn namespace(meta: &mut ObjectMeta) {
    if meta.namespace.is_empty() {
        meta.namespace = "default".to_owned();
    }
}

fn error(file: &Path, object: &str, message: String) -> FileError {
    FileError {
        file: file.to_owned(),
        object: object.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn load(text: &str) -> (Snapshot, Vec<FileError>) {
        let mut snap = Snapshot::default();
        let mut errors = Vec::new();
        add_documents(Path::new("app.yaml"), text, &mut snap, &mut errors);
        (snap, errors)
    }

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
    fn a_wrong_type_names_file_object_and_field() {
        let (_, errors) = load(&GOOD.replace("servicePort: 80,", "servicePort: [80],"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = errors[0].to_string();
        assert!(e.starts_with("app.yaml: Ingress default/hello: spec.rules[0].http.paths[0].splits[0].servicePort"), "{e}");
    }

    #[test]
    fn an_invalid_ingress_is_reported_with_its_field() {
        let (_, errors) = load(&GOOD.replace("percent: 100", "percent: 60"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .to_string()
                .contains("spec.rules[0].http.paths[0].splits: the percentages must add up to 100"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn broken_yaml_and_unknown_objects_are_errors() {
        let (_, errors) = load("apiVersion: v1\nkind: Service\nmetadata: {name: x\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].object, "document 1");
        let (_, errors) = load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n");
        assert_eq!(
            errors[0].to_string(),
            "app.yaml: Deployment /web: unsupported object apps/v1 Deployment"
        );
        let (_, errors) = load("kind: Service\nmetadata: {}\n");
        assert_eq!(errors[0].message, "metadata.name: missing");
    }

    #[test]
    fn a_directory_loads_sorted_yaml_files_only() {
        let dir = std::env::temp_dir().join(format!("knoxy-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("a.yaml"), GOOD).expect("write");
        std::fs::write(dir.join("notes.txt"), "not yaml: [").expect("write");
        let snap = load_dir(&dir).expect("loads");
        assert_eq!(snap.ingresses.len(), 1);
        std::fs::write(dir.join("b.yml"), "kind: [").expect("write");
        let errors = load_dir(&dir).expect_err("b.yml is broken");
        assert!(errors[0].file.ends_with("b.yml"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

// === Watching ===

/// How long to wait after a change for the rest of it (editors write in several steps).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(15);

/// Keeps a directory watched; dropping it stops the watch.
pub struct DirWatch {
    _watcher: notify::RecommendedWatcher,
    /// What `follow` needs; taken when it starts.
    pending: Option<(mpsc::Receiver<()>, DirReader, PathBuf)>,
}

/// Starts watching `dir`, then loads it and returns that first load; `DirWatch::follow`
/// then reloads after every change. Watching starts before the first read, so no change is
/// missed between the two.
pub fn watch(dir: &Path) -> notify::Result<(DirWatch, Result<Snapshot, Vec<FileError>>)> {
    use notify::Watcher as _;
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    let mut reader = DirReader::default();
    let first = reader.read(dir);
    let watch = DirWatch {
        _watcher: watcher,
        pending: Some((rx, reader, dir.to_owned())),
    };
    Ok((watch, first))
}

impl DirWatch {
    /// Hands each load after a change to `on_load`, on a thread of its own. A failed load is
    /// reported as it is: the caller keeps its last good table.
    pub fn follow(
        &mut self,
        mut on_load: impl FnMut(Result<Snapshot, Vec<FileError>>) + Send + 'static,
    ) -> std::io::Result<()> {
        let Some((rx, mut reader, dir)) = self.pending.take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("knoxy-files".into())
            .spawn(move || {
                // Each burst of events gives one reload; the loop ends when the watch is dropped.
                while rx.recv().is_ok() {
                    while rx.recv_timeout(SETTLE).is_ok() {}
                    on_load(reader.read(&dir));
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn changes_are_loaded_and_failures_reported_without_stopping_the_watch() {
        let dir = std::env::temp_dir().join(format!("knoxy-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (tx, rx) = mpsc::channel();
        let count =
            |r: Result<Snapshot, Vec<FileError>>| r.map(|s| s.services.len()).map_err(|e| e.len());
        let (mut watch, first) = watch(&dir).expect("watch starts");
        assert_eq!(
            count(first),
            Ok(0),
            "the first load is the directory as it is"
        );
        watch
            .follow(move |r| {
                let _ = tx.send(count(r));
            })
            .expect("follows");
        let next = || {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a load within 10 s")
        };

        let service =
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";
        std::fs::write(dir.join("a.yaml"), service).expect("write");
        let mut got = next();
        while got != Ok(1) {
            got = next();
        }
        std::fs::write(dir.join("b.yaml"), "kind: [").expect("write");
        let mut got = next();
        while got == Ok(1) {
            got = next();
        }
        assert_eq!(got, Err(1), "the broken file is reported");
        std::fs::remove_file(dir.join("b.yaml")).expect("remove");
        let mut got = next();
        while got != Ok(1) {
            got = next();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod reader_tests {
    use super::*;

    #[test]
    fn a_rereading_reader_sees_changes_additions_and_removals() {
        let dir = std::env::temp_dir().join(format!("knoxy-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let svc = |name: &str, port: u16| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n")
        };
        std::fs::write(dir.join("a.yaml"), svc("a", 80)).expect("write");
        let mut reader = DirReader::default();
        let ports = |snap: &Snapshot| {
            snap.services
                .values()
                .map(|s| s.spec.ports[0].port)
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(&reader.read(&dir).expect("loads")), [80]);
        std::fs::write(dir.join("b.yaml"), svc("b", 81)).expect("write");
        assert_eq!(ports(&reader.read(&dir).expect("loads")), [80, 81]);
        // Same length, new content: the inode or the modification time tells it changed.
        let tmp = dir.join(".a.tmp");
        std::fs::write(&tmp, svc("a", 90)).expect("write");
        std::fs::rename(&tmp, dir.join("a.yaml")).expect("rename");
        assert_eq!(ports(&reader.read(&dir).expect("loads")), [90, 81]);
        std::fs::remove_file(dir.join("b.yaml")).expect("remove");
        assert_eq!(ports(&reader.read(&dir).expect("loads")), [90]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod document_tests {
    use super::*;

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

    fn service(name: &str, port: u16) -> String {
        format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n")
    }

    #[test]
    fn an_edited_file_reparses_only_the_documents_that_changed() {
        let dir = std::env::temp_dir().join(format!("knoxy-docs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("all.yaml");
        let write = |text: &str| {
            let tmp = dir.join(".all.tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, &file).expect("rename");
        };
        write(&(service("a", 80) + &service("b", 81) + &service("c", 82)));
        let mut reader = DirReader::default();
        let before = reader.read(&dir).expect("loads");
        write(&(service("a", 80) + &service("b", 91) + &service("c", 82)));
        let after = reader.read(&dir).expect("loads");
        let same = |key: &str| Arc::ptr_eq(&before.services[key], &after.services[key]);
        assert!(
            same("default/a") && same("default/c"),
            "unchanged documents keep their objects"
        );
        assert!(!same("default/b"));
        assert_eq!(after.services["default/b"].spec.ports[0].port, 91);

        // A broken document is reported as the whole file's parse reports it (line included).
        write(&(service("a", 80) + "---\nkind: [\n" + &service("c", 82)));
        let errors = reader.read(&dir).expect_err("broken");
        assert_eq!(errors, load_dir(&dir).expect_err("broken"));
        assert!(errors[0].message.contains("line"), "{errors:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod bounded_tests {
    use super::*;
    use std::time::Duration;

    /// A fresh directory for one test, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("knoxy-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Reads `dir` on another thread, so that a read that blocks fails the test instead of hanging it.
    fn read_within_a_second(dir: &Path) -> Result<Snapshot, Vec<FileError>> {
        let (tx, rx) = mpsc::channel();
        let dir = dir.to_owned();
        std::thread::spawn(move || {
            let _ = tx.send(load_dir(&dir));
        });
        rx.recv_timeout(Duration::from_secs(1))
            .expect("the read does not block")
    }

    const SERVICE: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";

    #[test]
    fn a_fifo_is_refused_without_blocking_the_read() {
        let dir = TempDir::new("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(dir.0.join("pipe.yaml"))
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let errors = read_within_a_second(&dir.0).expect_err("a FIFO is not read");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].file.ends_with("pipe.yaml"));
        assert!(
            errors[0].message.contains("not a regular file"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_symlink_to_a_device_is_refused_and_one_to_a_file_is_followed() {
        let dir = TempDir::new("symlink");
        std::os::unix::fs::symlink("/dev/zero", dir.0.join("zero.yaml")).expect("symlink");
        let errors = read_within_a_second(&dir.0).expect_err("a device is not read");
        assert!(errors[0].file.ends_with("zero.yaml"), "{errors:?}");
        assert!(
            errors[0].message.contains("not a regular file"),
            "{errors:?}"
        );

        std::fs::remove_file(dir.0.join("zero.yaml")).expect("remove");
        std::fs::write(dir.0.join("real.txt"), SERVICE).expect("write");
        std::os::unix::fs::symlink(dir.0.join("real.txt"), dir.0.join("link.yaml"))
            .expect("symlink");
        let snap = read_within_a_second(&dir.0).expect("a symlink to a file is read");
        assert_eq!(snap.services.len(), 1);
    }

    #[test]
    fn a_directory_named_like_a_file_is_refused() {
        let dir = TempDir::new("subdir");
        std::fs::create_dir(dir.0.join("sub.yaml")).expect("mkdir");
        let errors = read_within_a_second(&dir.0).expect_err("a directory is not read");
        assert!(
            errors[0].message.contains("not a regular file"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_file_above_the_limit_is_refused_with_the_limit_named() {
        let dir = TempDir::new("large");
        let file = std::fs::File::create(dir.0.join("big.yaml")).expect("create");
        // Sparse: no disk is used for the hole.
        file.set_len(MAX_FILE_BYTES + 1).expect("set_len");
        let errors = read_within_a_second(&dir.0).expect_err("too large");
        assert!(errors[0].file.ends_with("big.yaml"), "{errors:?}");
        assert!(
            errors[0].message.contains(&MAX_FILE_BYTES.to_string()),
            "{errors:?}"
        );
        file.set_len(0).expect("set_len");
        std::fs::write(dir.0.join("big.yaml"), SERVICE).expect("write");
        assert_eq!(
            read_within_a_second(&dir.0)
                .expect("small again")
                .services
                .len(),
            1
        );
    }

    #[test]
    fn a_bounded_read_stops_one_byte_past_the_limit() {
        // /dev/zero never ends: only the bound stops it (the metadata check is skipped here).
        let zero = std::fs::File::open("/dev/zero").expect("/dev/zero");
        let error = read_at_most(zero, 0, 1024).expect_err("endless");
        assert!(error.contains("1024"), "{error}");
    }
}
