//! The TLS listener's configuration (contract §9): Knative's mounted certificate, reloaded
//! every minute when the files change, TLS 1.3 minimum unless configured, ALPN h2 and http/1.1.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, TlsVersion};
use crate::log;

const RELOAD_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to stat {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("failed to create certWatcher: {0}")]
    Load(String),
}

/// The acceptor when both `tls.crt` and `tls.key` exist, else `None` (TLS off).
pub fn acceptor(cfg: &Config) -> Result<Option<TlsAcceptor>, TlsError> {
    let crt = cfg.certs_dir.join("tls.crt");
    let key = cfg.certs_dir.join("tls.key");
    if !exists(&crt)? || !exists(&key)? {
        return Ok(None);
    }
    let (current, bytes) = load(&crt, &key).map_err(TlsError::Load)?;
    let resolver = Arc::new(Reloading {
        current: RwLock::new(current),
    });
    tokio::spawn(watch(Arc::clone(&resolver), crt, key, bytes));

    let versions: &[&rustls::SupportedProtocolVersion] = match (cfg.tls_min, cfg.tls_max) {
        (TlsVersion::Tls12, TlsVersion::Tls13) => {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        }
        (TlsVersion::Tls12, TlsVersion::Tls12) => &[&rustls::version::TLS12],
        _ => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Load(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// One certificate for any SNI, swapped in place when the files change.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

async fn watch(resolver: Arc<Reloading>, crt: PathBuf, key: PathBuf, mut seen: Vec<u8>) {
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let now = [
            std::fs::read(&crt).unwrap_or_default(),
            std::fs::read(&key).unwrap_or_default(),
        ]
        .concat();
        if now == seen {
            continue;
        }
        match load(&crt, &key) {
            Ok((certified, bytes)) => {
                *resolver.current.write() = certified;
                seen = bytes;
                log::info!("Certificate reloaded");
            }
            // Keep serving the previous certificate.
            Err(e) => log::error!("failed to reload certificate: {e}"),
        }
    }
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(TlsError::Stat {
            path: path.to_owned(),
            source,
        }),
    }
}

fn load(crt: &Path, key: &Path) -> Result<(Arc<CertifiedKey>, Vec<u8>), String> {
    let crt_pem = std::fs::read(crt).map_err(|e| format!("{}: {e}", crt.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let chain = rustls_pemfile::certs(&mut &crt_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", crt.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", crt.display()));
    }
    let private = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no private key found", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((
        Arc::new(CertifiedKey::new(chain, signing)),
        [crt_pem, key_pem].concat(),
    ))
}
