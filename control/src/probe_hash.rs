//! The hash Knative's ingress prober compares (contract §3.2):
//! `hex(sha256(json(spec) ‖ namespace ‖ name))`, with `json` exactly as Go's `encoding/json`
//! writes an `IngressSpec`. The gateway sets it in `K-Network-Hash` for `override` probes.

use sha2::{Digest, Sha256};

use crate::kingress::{IngressSpec, KIngress};

/// The probe hash of a KIngress as stored (defaulted, before probe paths are added).
pub fn probe_hash(ingress: &KIngress) -> String {
    hash(
        &ingress.spec,
        &ingress.metadata.namespace,
        &ingress.metadata.name,
    )
}

pub fn hash(spec: &IngressSpec, namespace: &str, name: &str) -> String {
    let mut sha = Sha256::new();
    sha.update(go_json(spec).as_bytes());
    sha.update(namespace.as_bytes());
    sha.update(name.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    sha.finalize()
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// Go's JSON of the spec: compact, struct fields in declaration order (the serde types keep
/// it), map keys sorted (`BTreeMap`), and Go's HTML-safe escapes, which serde_json does not do.
/// Those characters can only occur inside strings, so replacing them in the output is exact.
pub fn go_json(spec: &IngressSpec) -> String {
    // A struct of strings, maps and vectors always serializes.
    let json = serde_json::to_string(spec).unwrap_or_default();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> IngressSpec {
        serde_json::from_str(json).expect("a valid spec")
    }

    const VECTOR_1: &str = r#"{"rules":[{"hosts":["example.com"],"http":{"paths":[{"splits":[{"serviceNamespace":"","serviceName":"blah","servicePort":0}]}]}}]}"#;
    const VECTOR_2: &str = r#"{"rules":[{"hosts":["example.com"],"http":{"paths":[{"splits":[{"serviceNamespace":"","serviceName":"blah","servicePort":0,"appendHeaders":{"Foo":"bar"}}]}]}}]}"#;
    const VECTOR_3: &str = r#"{"rules":[{"hosts":["hello.default.example.com"],"visibility":"ExternalIP","http":{"paths":[{"splits":[{"serviceNamespace":"default","serviceName":"hello-00001","servicePort":80,"percent":100,"appendHeaders":{"Knative-Serving-Namespace":"default","Knative-Serving-Revision":"hello-00001"}}]}]}}],"httpOption":"Enabled"}"#;

    #[test]
    fn knatives_test_vectors() {
        assert_eq!(
            hash(&spec(VECTOR_1), "", ""),
            "a25000a350642c8abef53078b329bd043e18758f6063c1172d53b04e14fcf5c1"
        );
        assert_eq!(
            hash(&spec(VECTOR_2), "", ""),
            "6b652c7abed871354affd4a9cb699d33816f24541fac942149b91ad872fe63ca"
        );
        assert_eq!(
            hash(&spec(VECTOR_3), "default", "hello"),
            "ef7852e1be9ad0620814c4d952a07f610ef0f85d5ee171bc86b899bf575f77ca"
        );
    }

    #[test]
    fn go_json_round_trips_the_vectors_byte_for_byte() {
        for v in [VECTOR_1, VECTOR_2, VECTOR_3] {
            assert_eq!(go_json(&spec(v)), v);
        }
    }

    #[test]
    fn go_json_sorts_maps_keeps_null_paths_and_escapes_like_go() {
        let s = spec(
            r#"{"rules":[{"http":{}},{"http":{"paths":[{"path":"/a","headers":{"b":{"exact":"<&>"},"a":{"exact":""}},"splits":null}]}}],"tls":[{"hosts":["h"],"secretName":"s","secretNamespace":"n"}]}"#,
        );
        assert_eq!(
            go_json(&s),
            r#"{"tls":[{"hosts":["h"],"secretName":"s","secretNamespace":"n"}],"rules":[{"http":{"paths":null}},{"http":{"paths":[{"path":"/a","headers":{"a":{"exact":""},"b":{"exact":"\u003c\u0026\u003e"}},"splits":null}]}}]}"#
        );
    }

    #[test]
    fn named_service_ports_are_strings() {
        let s = spec(
            r#"{"rules":[{"http":{"paths":[{"splits":[{"serviceNamespace":"n","serviceName":"s","servicePort":"http2"}]}]}}]}"#,
        );
        assert!(go_json(&s).contains(r#""servicePort":"http2""#));
    }
}
