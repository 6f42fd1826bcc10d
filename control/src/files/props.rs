//! Property tests of the file source's document parser: arbitrary bytes and mangled YAML
//! never make it panic, every error names its file and document, KIngresses written as
//! YAML read back as they were, and parsing a file document by document agrees with
//! parsing it whole. What parsed then goes through `derive` unharmed.

use proptest::prelude::*;

use super::*;
use crate::derive::props::{check_well_formed, config, kingress, plain_kingress, with};
use crate::derive::{derive, DeriveConfig};

const FILE: &str = "props.yaml";

/// A KIngress as a YAML document of a file, with its `---`.
fn document(ingress: &KIngress) -> String {
    let mut value = serde_json::to_value(ingress).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            "networking.internal.knative.dev/v1alpha1".into(),
        );
        map.insert("kind".into(), "Ingress".into());
    }
    format!(
        "---\n{}",
        serde_norway::to_string(&value).unwrap_or_default()
    )
}

/// One edit of a text: a byte range replaced by one of YAML's syntax characters.
#[derive(Debug, Clone)]
struct Mangle {
    at: prop::sample::Index,
    len: usize,
    with: &'static str,
}

fn mangle() -> impl Strategy<Value = Mangle> {
    let with = prop::sample::select(
        &[
            "",
            ":",
            "- ",
            "[",
            "]",
            "{",
            "}",
            "\"",
            "'",
            "\n",
            "\n---\n",
            "&a ",
            "*a",
            "!!int ",
            "|\n",
            "#",
            "\t",
            "%YAML 1.2\n",
            "...\n",
            "ü",
            "\u{0}",
            "  ",
        ][..],
    );
    (any::<prop::sample::Index>(), 0usize..8, with).prop_map(|(at, len, with)| Mangle {
        at,
        len,
        with,
    })
}

/// `text` with each edit applied at a character boundary.
fn mangled(text: &str, edits: &[Mangle]) -> String {
    let mut text = text.to_owned();
    for edit in edits {
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let start = bounds[edit.at.index(bounds.len())];
        let end = bounds
            .iter()
            .copied()
            .find(|&b| b >= start + edit.len)
            .unwrap_or(text.len());
        text.replace_range(start..end, edit.with);
    }
    text
}

/// Every error names the file and a document of it, and says something.
fn check_errors(errors: &[FileError], documents: usize) -> Result<(), TestCaseError> {
    for e in errors {
        prop_assert_eq!(&e.file, Path::new(FILE));
        let n = e.document.unwrap_or(0);
        prop_assert!(
            n >= 1 && n <= documents.max(1),
            "{}: {} documents",
            e,
            documents
        );
        prop_assert!(!e.message.is_empty(), "{}", e);
    }
    Ok(())
}

/// The whole text parsed at once.
fn whole(text: &str) -> (Snapshot, Vec<FileError>) {
    let mut snap = Snapshot::default();
    let mut errors = Vec::new();
    add_documents(Path::new(FILE), text, &mut snap, &mut errors);
    (snap, errors)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_parse_without_panic_and_every_error_names_file_and_document(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let text = String::from_utf8_lossy(&bytes);
        let (snap, errors) = whole(&text);
        check_errors(&errors, text.len() + 1)?;
        check_well_formed(&derive(&snap, &DeriveConfig::default()))?;
    }

    #[test]
    fn ingresses_written_as_yaml_read_back_as_they_were(
        objects in prop::collection::vec(prop_oneof![kingress(), plain_kingress()], 1..4),
    ) {
        let text: String = objects.iter().map(document).collect();
        let (snap, errors) = whole(&text);
        prop_assert_eq!(errors, vec![], "{}", text);
        let want = with(objects);
        prop_assert_eq!(&snap.ingresses, &want.ingresses, "{}", text);
    }

    #[test]
    fn the_documents_of_a_file_in_any_order_give_the_same_snapshot(
        shuffled in prop::collection::btree_map(
            (prop::sample::select(&["a", "b", "c", "d"][..]), prop::sample::select(&["default", "other"][..])),
            kingress(),
            1..5,
        )
        .prop_map(|objects| {
            // One object per key, so that no document overrides another.
            objects
                .into_iter()
                .map(|((name, ns), mut o)| {
                    o.metadata.name = name.into();
                    o.metadata.namespace = ns.into();
                    o
                })
                .collect::<Vec<_>>()
        })
        .prop_flat_map(|objects| (Just(objects.clone()), Just(objects).prop_shuffle())),
    ) {
        let (objects, shuffled) = shuffled;
        let text = |objects: &[KIngress]| objects.iter().map(document).collect::<String>();
        let (snap, errors) = whole(&text(&objects));
        prop_assert_eq!(errors, vec![]);
        prop_assert_eq!(whole(&text(&shuffled)).0, snap);
    }

    #[test]
    fn mangled_documents_parse_without_panic_and_alone_as_whole_when_whole_is_clean(
        objects in prop::collection::vec(prop_oneof![kingress(), plain_kingress()], 1..4),
        edits in prop::collection::vec(mangle(), 0..4),
    ) {
        let text = mangled(&objects.iter().map(document).collect::<String>(), &edits);
        let (snap, errors) = whole(&text);
        check_errors(&errors, text.matches('\n').count() + 1)?;
        check_well_formed(&derive(&snap, &DeriveConfig::default()))?;
        let Some(docs) = split_documents(&text) else {
            return Ok(());
        };
        prop_assert_eq!(docs.concat(), text.as_str());
        let (alone, alone_errors, _) = parse_documents(Path::new(FILE), &text, &docs, Vec::new());
        // Junk after a complete document is, as in the whole file, the start of the next.
        check_errors(&alone_errors, docs.len() + 1)?;
        check_well_formed(&derive(&alone, &DeriveConfig::default()))?;
        if errors.is_empty() {
            prop_assert_eq!(alone_errors, vec![], "{}", text);
            prop_assert_eq!(alone, snap, "{}", text);
        }
    }
}
