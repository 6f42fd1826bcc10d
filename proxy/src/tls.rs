//! TLS on the gateway's HTTPS listeners: the certificate is chosen by SNI from the KIngress
//! `tls` entries of the current table; ALPN offers h2 and http/1.1. The handshake runs on
//! the TCP connections Pingora's listeners accept (tokio-rustls), so a new table's
//! certificates apply to the next handshake without restarting a listener.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use knoxy_control::route::Cert;
use parking_lot::Mutex;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Certificates by host, rebuilt with every table (parsed once, not per handshake).
#[derive(Debug, Default)]
pub struct CertStore {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    /// Each table certificate with what it parsed to, by address: the next table shares
    /// unchanged ones and does not parse them again.
    parsed: HashMap<usize, (Arc<Cert>, Arc<CertifiedKey>)>,
}

impl CertStore {
    /// Parses each KIngress certificate (reusing `previous` for the same shared `Cert`); an
    /// entry that does not parse is reported and skipped.
    pub fn build(certs: &[Arc<Cert>], previous: &CertStore) -> (CertStore, Vec<String>) {
        let mut store = CertStore::default();
        let mut problems = Vec::new();
        for cert in certs {
            let id = Arc::as_ptr(cert) as usize;
            let known = previous
                .parsed
                .get(&id)
                .filter(|(c, _)| Arc::ptr_eq(c, cert))
                .map(|(_, key)| Arc::clone(key));
            match known.map_or_else(|| certified(cert).map(Arc::new), Ok) {
                Ok(key) => {
                    store
                        .parsed
                        .insert(id, (Arc::clone(cert), Arc::clone(&key)));
                    for host in &cert.hosts {
                        store
                            .by_host
                            .entry(host.to_ascii_lowercase())
                            .or_insert_with(|| Arc::clone(&key));
                    }
                }
                Err(e) => problems.push(format!("certificate for {:?}: {e}", cert.hosts)),
            }
        }
        (store, problems)
    }
}

fn certified(cert: &Cert) -> Result<CertifiedKey, String> {
    certified_pem(&cert.cert_pem, &cert.key_pem)
}

fn certified_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".to_owned());
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| e.to_string())?
        .ok_or("tls.key holds no private key")?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Looks the SNI name up in the current store; no match fails the handshake.
#[derive(Debug)]
struct BySni(Arc<ArcSwap<CertStore>>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        self.0.load().by_host.get(&name).cloned()
    }
}

/// The activator's TLS port (Knative's 8112, for system-internal-tls): one certificate from
/// PEM files, read again when they change (a rotated Secret mounted as files), looked at no
/// more than once a second. A change that does not parse keeps the last good certificate.
#[derive(Debug)]
pub struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<Loaded>,
    looked: Mutex<Instant>,
}

#[derive(Debug)]
struct Loaded {
    changed: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<CertifiedKey>,
}

impl FileCert {
    /// Reads both files now: an error names the one at fault.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<FileCert>, String> {
        let loaded = read_pair(&cert, &key)?;
        Ok(Arc::new(FileCert {
            cert,
            key,
            current: ArcSwap::from_pointee(loaded),
            looked: Mutex::new(Instant::now()),
        }))
    }

    fn refresh(&self) {
        let Some(mut looked) = self.looked.try_lock() else {
            return; // another handshake is looking
        };
        if looked.elapsed() < Duration::from_secs(1) {
            return;
        }
        *looked = Instant::now();
        if changed(&self.cert, &self.key) == self.current.load().changed {
            return;
        }
        match read_pair(&self.cert, &self.key) {
            Ok(loaded) => self.current.store(Arc::new(loaded)),
            Err(e) => eprintln!("knoxy: {e} (keeping the last good certificate)"),
        }
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(Arc::clone(&self.current.load().key))
    }
}

fn changed(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (mtime(cert), mtime(key))
}

fn read_pair(cert: &Path, key: &Path) -> Result<Loaded, String> {
    let changed = changed(cert, key);
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let parsed = certified_pem(&cert_pem, &key_pem)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
    Ok(Loaded {
        changed,
        key: Arc::new(parsed),
    })
}

/// The public HTTPS listeners' acceptor: certificates by SNI from the table.
pub fn acceptor(store: Arc<ArcSwap<CertStore>>) -> Result<TlsAcceptor, rustls::Error> {
    acceptor_with(Arc::new(BySni(store)))
}

/// A TLS acceptor offering h2 and http/1.1 with the certificates `resolver` picks.
pub fn acceptor_with(resolver: Arc<dyn ResolvesServerCert>) -> Result<TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(host: &str) -> Arc<Cert> {
        let made = rcgen::generate_simple_self_signed(vec![host.to_owned()]).expect("a cert");
        Arc::new(Cert {
            hosts: vec![host.to_owned()],
            cert_pem: made.cert.pem().into_bytes(),
            key_pem: made.signing_key.serialize_pem().into_bytes(),
        })
    }

    #[test]
    fn a_new_table_reuses_the_parsed_keys_of_shared_certificates() {
        let (a, b) = (cert("a.example.com"), cert("b.example.com"));
        let (first, problems) = CertStore::build(&[Arc::clone(&a)], &CertStore::default());
        assert!(problems.is_empty(), "{problems:?}");
        let (second, _) = CertStore::build(&[a, Arc::clone(&b)], &first);
        let key = |s: &CertStore, h: &str| Arc::clone(&s.by_host[h]);
        assert!(Arc::ptr_eq(
            &key(&first, "a.example.com"),
            &key(&second, "a.example.com")
        ));
        // An equal certificate that is a new object is parsed again (nothing is assumed).
        let b_again = Arc::new((*b).clone());
        let (third, _) = CertStore::build(&[b_again], &second);
        assert!(!Arc::ptr_eq(
            &key(&second, "b.example.com"),
            &key(&third, "b.example.com")
        ));
        assert!(!third.by_host.contains_key("a.example.com"));
    }

    #[test]
    fn a_certificate_that_does_not_parse_is_reported_and_skipped() {
        let bad = Arc::new(Cert {
            hosts: vec!["bad.example.com".into()],
            cert_pem: b"not a pem".to_vec(),
            key_pem: vec![],
        });
        let (store, problems) = CertStore::build(&[bad], &CertStore::default());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(store.by_host.is_empty());
    }
}
