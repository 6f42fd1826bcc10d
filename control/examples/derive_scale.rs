//! How long a reload takes over N KIngresses (the gateway's reload cost): `derive` from
//! scratch, remembering, and told what moved, and re-reading the directory after one edit inside a file of N:
//! `cargo run --release -p knoxy-control --example derive_scale [N]`.

use std::path::Path;
use std::time::Instant;

use std::sync::Arc;

use knoxy_control::derive::{derive, DeriveConfig, Deriver, Moved, Snapshot};
use knoxy_control::files::add_documents;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let mut text = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: rev, namespace: default}\nspec:\n  ports: [{name: http, port: 80}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: rev-x, namespace: default, labels: {kubernetes.io/service-name: rev}}\naddressType: IPv4\nendpoints: [{addresses: [127.0.0.1]}]\nports: [{name: http, port: 8080}]\n---\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata:\n  name: h{i}\n  namespace: default\n  annotations: {{networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}\nspec:\n  rules:\n  - hosts: [h{i}.example.com]\n    http:\n      paths:\n      - splits: [{{serviceNamespace: default, serviceName: rev, servicePort: 80, percent: 100, appendHeaders: {{Knative-Serving-Revision: rev}}}}]\n---\n"
        ));
    }
    let mut snap = Snapshot::default();
    let mut errors = Vec::new();
    let t = Instant::now();
    add_documents(Path::new("gen.yaml"), &text, &mut snap, &mut errors);
    println!("parse {n}: {:?} ({} errors)", t.elapsed(), errors.len());
    let cfg = DeriveConfig::default();
    for round in 0..3 {
        let t = Instant::now();
        let d = derive(&snap, &cfg);
        let took = t.elapsed();
        let t = Instant::now();
        drop(d);
        println!(
            "derive from scratch #{round}: {took:?}, drop {:?}",
            t.elapsed()
        );
    }
    let dir = std::env::temp_dir().join(format!("knoxy-derive-scale-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("all.yaml");
    let _ = std::fs::write(&file, &text);
    let mut reader = knoxy_control::files::DirReader::default();
    let t = Instant::now();
    let read = reader.read(&dir);
    let read = (read.snapshot.ingresses.len(), read.errors.len());
    println!(
        "read the directory: {:?} ((KIngresses, errors): {read:?})",
        t.elapsed()
    );
    for round in 0..3 {
        let edited = text.replacen(
            "hosts: [h7.example.com]",
            &format!("hosts: [e{round}.example.com]"),
            1,
        );
        let tmp = dir.join(".all.tmp");
        let _ = std::fs::write(&tmp, edited);
        let _ = std::fs::rename(&tmp, &file);
        let t = Instant::now();
        let read = reader.read(&dir);
        let read = (read.snapshot.ingresses.len(), read.errors.len());
        println!(
            "re-read after one edit #{round}: {:?} ((KIngresses, errors): {read:?})",
            t.elapsed()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    let mut deriver = Deriver::new(cfg);
    let t = Instant::now();
    let mut last = deriver.derive(&snap);
    println!("remembering deriver, first: {:?}", t.elapsed());
    for round in 0..3 {
        // One KIngress changes (a new object), as a reload after one edit would see.
        let key = format!("default/h{round}");
        let mut changed = (*snap.ingresses[&key]).clone();
        changed.spec.rules[0].hosts = vec![format!("new{round}.example.com")];
        snap.ingresses.insert(key, Arc::new(changed));
        let t = Instant::now();
        let d = deriver.derive(&snap);
        let took = t.elapsed();
        let t = Instant::now();
        drop(std::mem::replace(&mut last, d));
        println!(
            "remembering deriver, one changed #{round}: {took:?}, drop {:?}",
            t.elapsed()
        );
    }
    for round in 0..3 {
        // The same, told which key moved (as the Kubernetes source tells it).
        let key = format!("default/h{}", 10 + round);
        let mut changed = (*snap.ingresses[&key]).clone();
        changed.spec.rules[0].hosts = vec![format!("told{round}.example.com")];
        snap.ingresses.insert(key.clone(), Arc::new(changed));
        let moved = Moved {
            ingresses: [key].into(),
            ..Moved::default()
        };
        let t = Instant::now();
        let d = deriver.derive_moved(&snap, &moved);
        let took = t.elapsed();
        let t = Instant::now();
        drop(std::mem::replace(&mut last, d));
        println!(
            "told what moved, one changed #{round}: {took:?}, drop {:?}",
            t.elapsed()
        );
    }
}
