//! The file source: a directory of YAML files (several documents each allowed) holding the
//! same objects a cluster would (KIngress, Service, EndpointSlice, Secret), read into a
//! [`Snapshot`]. Every problem names the file, the document and the field.
//!
//! One broken file (or document) holds back only its own objects: a read returns every
//! object that parsed and, for a file with problems, the last good version of each object
//! it no longer yields (so an object deleted from a broken file stays until the file is
//! fixed). Objects are not validated here: `derive` judges KIngresses, and keeps serving
//! the last valid version of one that turns invalid.

use std::collections::{BTreeMap, HashMap};
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

// === Types ===

/// What a read of the directory gives: the objects to serve, and every problem found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// Every object that parsed, and the last good version of those a problem hid.
    pub snapshot: Snapshot,
    pub errors: Vec<FileError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: PathBuf,
    /// 1-based, in the file's YAML stream; None for problems of the whole file.
    pub document: Option<usize>,
    /// `Kind namespace/name`, when the document says that much.
    pub object: Option<String>,
    /// `field: problem`, or the YAML error with its line.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(n) = self.document {
            write!(f, ": document {n}")?;
        }
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FileError {}

// === Reading a directory ===

/// Reads every `*.yaml`/`*.yml` file of `dir` (sorted, not recursive).
pub fn load_dir(dir: &Path) -> Loaded {
    DirReader::default().read(dir)
}

/// Reads a directory again and again, parsing only the files that changed since the last
/// read (a file is unchanged while its inode, length and modification time are), and in a
/// changed file only the documents whose text changed.
#[derive(Default)]
pub struct DirReader {
    cache: HashMap<PathBuf, Parsed>,
    /// Whether the last read found any file added, gone, changed or with problems.
    changed: bool,
    /// The last read could not list the directory (its error was reported).
    failed: bool,
}

/// Inode, length, modification and change times: a file with the same stamp is unchanged
/// (the change time also moves on a chmod and on copies that keep the modification time).
type Stamp = (u64, u64, Option<SystemTime>, (i64, i64));

struct Parsed {
    stamp: Stamp,
    /// What the file contributes: its objects, and with errors also its last good ones.
    snap: Snapshot,
    errors: Vec<FileError>,
    /// Empty when the file was parsed whole.
    docs: Docs,
}

/// Each document's text and its objects (None when it has errors), in file order.
type Docs = Vec<(Box<str>, Option<Snapshot>)>;

impl DirReader {
    pub fn read(&mut self, dir: &Path) -> Loaded {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_config_file(p))
                .collect(),
            Err(e) => {
                self.changed = true;
                self.failed = true;
                // Nothing is known of any file: all of them keep what they had.
                let mut kept: Vec<_> = self.cache.iter().collect();
                kept.sort_by(|a, b| a.0.cmp(b.0));
                let mut snapshot = Snapshot::default();
                kept.iter().for_each(|(_, p)| merge(&mut snapshot, &p.snap));
                return Loaded {
                    snapshot,
                    errors: vec![error(dir, format!("cannot list the directory: {e}"))],
                };
            }
        };
        files.sort();
        let mut cache = HashMap::with_capacity(files.len());
        let mut loaded = Loaded::default();
        // Listed again after a failure: the error reported is gone, which is a change.
        self.changed = std::mem::take(&mut self.failed);
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
                (previous, stamp) => {
                    self.changed = true;
                    parse_file(&file, stamp.unwrap_or_default(), previous)
                }
            };
            merge(&mut loaded.snapshot, &parsed.snap);
            loaded.errors.extend(parsed.errors.iter().cloned());
            cache.insert(file, parsed);
        }
        // Files that are gone leave the cache with their objects.
        self.changed |= !self.cache.is_empty();
        self.cache = cache;
        loaded
    }

    /// Whether the last `read` may differ from the one before (a file added, gone, changed,
    /// or with problems, which are read again each time).
    pub fn changed(&self) -> bool {
        self.changed
    }
}

fn parse_file(file: &Path, stamp: Stamp, previous: Option<Parsed>) -> Parsed {
    let (last, previous_docs) = previous.map(|p| (p.snap, p.docs)).unwrap_or_default();
    let (snap, errors, docs) = match read_bounded(file) {
        Err(e) => (Snapshot::default(), vec![error(file, e)], previous_docs),
        Ok(text) => match split_documents(&text) {
            Some(docs) => parse_documents(file, &text, &docs, previous_docs),
            None => {
                // Parsed whole: directives and `...` ends do not split at `---` lines.
                let mut snap = Snapshot::default();
                let mut errors = Vec::new();
                add_documents(file, &text, &mut snap, &mut errors);
                (snap, errors, Vec::new())
            }
        },
    };
    if errors.is_empty() {
        return Parsed {
            stamp,
            snap,
            errors,
            docs,
        };
    }
    // What the file yields now wins; what it no longer yields keeps its last good version.
    let mut kept = last;
    merge(&mut kept, &snap);
    Parsed {
        stamp,
        snap: kept,
        errors,
        docs,
    }
}

// === Documents ===

/// The objects and problems of a file's documents, each document parsed on its own or
/// reused from `previous` when its text is unchanged (the same objects, shared).
fn parse_documents(
    file: &Path,
    text: &str,
    docs: &[&str],
    previous: Docs,
) -> (Snapshot, Vec<FileError>, Docs) {
    let mut snap = Snapshot::default();
    let mut errors = Vec::new();
    let mut parsed = Vec::with_capacity(docs.len());
    // Most documents of an edited file are where they were; the rest are found by text.
    let mut at_place: Vec<Option<(Box<str>, Snapshot)>> = previous
        .into_iter()
        .map(|(text, objects)| objects.map(|o| (text, o)))
        .collect();
    let mut by_text: Option<HashMap<Box<str>, Snapshot>> = None;
    // A leading piece of only comments is no document of the stream.
    let preamble = usize::from(docs.first().is_some_and(|d| is_preamble(d)));
    let mut offset = 0;
    for (i, doc) in docs.iter().enumerate() {
        let in_place = at_place
            .get_mut(i)
            .filter(|slot| slot.as_ref().is_some_and(|(text, _)| **text == **doc))
            .and_then(Option::take);
        let objects = match in_place {
            Some((_, objects)) => Some(objects),
            None => by_text
                .get_or_insert_with(|| at_place.iter_mut().filter_map(Option::take).collect())
                .remove(*doc)
                .or_else(|| {
                    let number = (i + 1).saturating_sub(preamble).max(1);
                    parse_document(file, text, offset, doc, number, &mut errors)
                }),
        };
        if let Some(objects) = &objects {
            merge(&mut snap, objects);
        }
        parsed.push(((*doc).into(), objects));
        offset += doc.len();
    }
    (snap, errors, parsed)
}

/// One document's objects, or None with its problems added to `errors`, named by its
/// `number` in the file and, for YAML errors, by its line in the file.
fn parse_document(
    file: &Path,
    text: &str,
    offset: usize,
    doc: &str,
    number: usize,
    errors: &mut Vec<FileError>,
) -> Option<Snapshot> {
    let mut objects = Snapshot::default();
    let mut found = Vec::new();
    add_documents_from(file, doc, number, &mut objects, &mut found);
    if found.is_empty() {
        return Some(objects);
    }
    // Parsed again after as many blank lines as precede it, so that lines count from the file's start.
    let lines = text.get(..offset).map_or(0, |t| t.matches('\n').count());
    let mut padded = "\n".repeat(lines);
    padded.push_str(doc);
    found.clear();
    add_documents_from(file, &padded, number, &mut Snapshot::default(), &mut found);
    errors.extend(found);
    None
}

/// Whether a piece of a stream holds only blank and comment lines and no `---`.
fn is_preamble(piece: &str) -> bool {
    piece.lines().all(|l| {
        let l = l.trim_start();
        l.is_empty() || l.starts_with('#')
    })
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

// === Bounded reads ===

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

// === Objects ===

/// Later files win for the same `namespace/name`, as if read one after the other.
fn merge(into: &mut Snapshot, from: &Snapshot) {
    fn extend<T>(into: &mut BTreeMap<String, Arc<T>>, from: &BTreeMap<String, Arc<T>>) {
        into.extend(from.iter().map(|(k, v)| (k.clone(), Arc::clone(v))));
    }
    extend(&mut into.ingresses, &from.ingresses);
    extend(&mut into.services, &from.services);
    extend(&mut into.endpoint_slices, &from.endpoint_slices);
    extend(&mut into.secrets, &from.secrets);
    extend(&mut into.revisions, &from.revisions);
}

/// Adds the objects of one file's text to `snap`, and its problems to `errors`.
pub fn add_documents(file: &Path, text: &str, snap: &mut Snapshot, errors: &mut Vec<FileError>) {
    add_documents_from(file, text, 1, snap, errors);
}

/// `add_documents`, numbering the text's documents from `first`.
fn add_documents_from(
    file: &Path,
    text: &str,
    first: usize,
    snap: &mut Snapshot,
    errors: &mut Vec<FileError>,
) {
    for (i, doc) in documents(text) {
        let number = Some(first + i - 1);
        let value = match doc {
            Ok(v) => v,
            Err(e) => {
                errors.push(FileError {
                    document: number,
                    ..error(file, e)
                });
                return;
            }
        };
        if let Err(ObjectError(object, message)) = add_object(value, snap) {
            errors.push(FileError {
                file: file.to_owned(),
                document: number,
                object,
                message,
            });
        }
    }
}

/// Each document of a YAML stream, numbered from 1; empty ones (`---` at the end) are
/// skipped, and a syntax error is the last item (the stream cannot be resumed after it).
pub fn documents(text: &str) -> Vec<(usize, Result<serde_norway::Value, String>)> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        match serde_norway::Value::deserialize(doc) {
            Ok(serde_norway::Value::Null) => {}
            Ok(v) => out.push((i + 1, Ok(v))),
            Err(e) => {
                out.push((i + 1, Err(e.to_string())));
                break;
            }
        }
    }
    out
}

/// (the object's name if known, the problem)
struct ObjectError(Option<String>, String);

/// What every object says of itself: its API, kind and metadata.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Head {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
}

fn add_object(value: serde_norway::Value, snap: &mut Snapshot) -> Result<(), ObjectError> {
    let mut head: Head = typed(value.clone()).map_err(|e| ObjectError(None, e))?;
    namespace(&mut head.metadata);
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
            // Validated by `derive`, which keeps serving the last valid version.
            let mut ingress: KIngress = typed(value).map_err(fail)?;
            namespace(&mut ingress.metadata);
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
        ("serving.knative.dev/v1", "Revision") => {
            let mut o: crate::revision::Revision = typed(value).map_err(fail)?;
            namespace(&mut o.metadata);
            // The webhook's checks: a revision out of range is this document's error.
            o.settings().map_err(fail)?;
            snap.revisions.insert(o.metadata.key(), Arc::new(o));
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
pub fn typed<T: DeserializeOwned>(value: serde_norway::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// Objects without a namespace land in `default`, as `kubectl apply` would put them.
fn namespace(meta: &mut ObjectMeta) {
    if meta.namespace.is_empty() {
        meta.namespace = "default".to_owned();
    }
}

/// A problem of the whole file (or directory).
fn error(file: &Path, message: String) -> FileError {
    FileError {
        file: file.to_owned(),
        document: None,
        object: None,
        message,
    }
}

// === Watching ===

/// How long to wait after an in-place change for the rest of it (editors write in several
/// steps).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(15);

/// A file the directory source reads: `*.yaml` or `*.yml`.
fn is_config_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Keeps a directory watched; dropping it stops the watch.
pub struct DirWatch {
    _watcher: notify::RecommendedWatcher,
    /// What `follow` needs; taken when it starts.
    pending: Option<(mpsc::Receiver<Change>, DirReader, PathBuf)>,
}

/// A change in the directory: a file renamed into place is whole at once (so a new pod is
/// served without waiting); a file written in place may still be half written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Whole,
    Partial,
}

/// Starts watching `dir`, then loads it and returns that first load (what parsed, and its
/// problems: a broken file does not keep the others from being served); `DirWatch::follow`
/// then reloads after every change. Watching starts before the first read, so no change is
/// missed between the two.
pub fn watch(dir: &Path) -> notify::Result<(DirWatch, Loaded)> {
    use notify::Watcher as _;
    let (tx, rx) = mpsc::channel::<Change>();
    // Only changes to what is read count: a log or socket written into the directory must
    // not reload it (a log line per reload would reload forever).
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let concerns_config = |e: &notify::Event| {
            e.paths.is_empty() || e.paths.iter().any(|p| is_config_file(p) || p.is_dir())
        };
        let Ok(event) = event else { return };
        if event.kind.is_access() || !concerns_config(&event) {
            return;
        }
        let moved_in = matches!(
            event.kind,
            notify::EventKind::Modify(notify::event::ModifyKind::Name(
                notify::event::RenameMode::To | notify::event::RenameMode::Both
            ))
        );
        let _ = tx.send(if moved_in {
            Change::Whole
        } else {
            Change::Partial
        });
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
    /// Hands each load after a change to `on_load`, on a thread of its own; the objects of a
    /// file with problems are already their last good versions in it.
    pub fn follow(
        &mut self,
        mut on_load: impl FnMut(Loaded) + Send + 'static,
    ) -> std::io::Result<()> {
        let Some((rx, mut reader, dir)) = self.pending.take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("knoxy-files".into())
            .spawn(move || {
                // Each burst of events gives one reload; the loop ends when the watch is dropped.
                while let Ok(first) = rx.recv() {
                    // Whole files load at once, unless a partial change is queued behind them.
                    let mut whole = first == Change::Whole;
                    while let Ok(next) = rx.try_recv() {
                        whole &= next == Change::Whole;
                    }
                    if !whole {
                        while rx.recv_timeout(SETTLE).is_ok() {}
                    }
                    // One rename gives several events, which may come apart: the later
                    // ones find nothing new, and load nothing.
                    let loaded = reader.read(&dir);
                    if reader.changed() {
                        on_load(loaded);
                    }
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
