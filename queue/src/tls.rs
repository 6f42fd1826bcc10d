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
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = &cfg.tls_cipher_suites {
        // Like Go, the list restricts TLS 1.2 only; TLS 1.3 suites stay as they are.
        provider
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13 || suites.contains(s));
    }
    if let Some(groups) = &cfg.tls_curves {
        provider.kx_groups.clone_from(groups);
    }
    for name in &cfg.tls_unsupported {
        log::warning!("{name} is not supported by knoxy-queue's TLS library and is left out");
    }
    let provider = Arc::new(provider);
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

// === Names in Knative's QUEUE_PROXY_TLS_* variables (Go's crypto/tls names) ===

/// One name of `QUEUE_PROXY_TLS_CIPHER_SUITES` or `_CURVE_PREFERENCES`.
pub enum Named<T> {
    Supported(T),
    /// Known to Go but not implemented here (legacy CBC/RSA suites, P-521, ML-KEM): skipped.
    Unsupported,
}

/// A Go cipher-suite name; `Err` for a name Go does not know either.
pub fn cipher_suite(name: &str) -> Result<Named<rustls::SupportedCipherSuite>, String> {
    use rustls::crypto::ring::cipher_suite as cs;
    Ok(Named::Supported(match name {
        "TLS_AES_128_GCM_SHA256" => cs::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => cs::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => cs::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_RSA_WITH_RC4_128_SHA"
        | "TLS_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256" => return Ok(Named::Unsupported),
        other => return Err(format!("unknown cipher suite {other:?}")),
    }))
}

/// A Go curve name (`CurveP256` or `P-256` style); `Err` for a name Go does not know.
pub fn curve(name: &str) -> Result<Named<&'static dyn rustls::crypto::SupportedKxGroup>, String> {
    use rustls::crypto::ring::kx_group;
    Ok(Named::Supported(match name {
        "X25519" => kx_group::X25519,
        "CurveP256" | "P-256" => kx_group::SECP256R1,
        "CurveP384" | "P-384" => kx_group::SECP384R1,
        "CurveP521" | "P-521" | "X25519MLKEM768" => return Ok(Named::Unsupported),
        other => return Err(format!("unknown curve {other:?}")),
    }))
}
