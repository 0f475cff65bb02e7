//! TLS on the listen port (`server.tls_cert`, `server.tls_key`, `server.tls_client_ca`):
//! rustls, with ALPN offering `h2` and `http/1.1`, so HTTPS and gRPC over TLS share the port
//! as plain HTTP and h2c do.
//!
//! The certificate is reloaded on `SIGHUP` and when a file changes (checked every
//! [`WATCH_INTERVAL`]), without dropping a connection: each new connection takes the newest
//! configuration, open ones keep the one they started with. A reload that fails (a key that
//! does not match, a file half-written) keeps the previous certificate and logs why.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::config::TlsFiles;

/// How often the PEM files are looked at for a change.
pub(super) const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// What identifies a file's version: modification time and size.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// The current TLS configuration, and the files it came from.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    stamp: std::sync::Mutex<Stamp>,
}

impl Tls {
    /// Loads the files.
    ///
    /// # Errors
    /// Naming the file and the setting when one cannot be read or does not hold what it should,
    /// or when the key does not match the certificate.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Self> {
        let stamp = stamp(files);
        let config = server_config(files)?;
        Ok(Self {
            files: files.clone(),
            current: ArcSwap::from_pointee(config),
            stamp: std::sync::Mutex::new(stamp),
        })
    }

    /// The acceptor for a new connection, with the newest configuration.
    #[must_use]
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Reloads the files when `force` or when one of them changed since the last load.
    /// Returns whether a new configuration is in force; on failure the previous one stays.
    pub fn reload(&self, force: bool) -> bool {
        let now = stamp(&self.files);
        {
            let last = self
                .stamp
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !force && *last == now {
                return false;
            }
        }
        match server_config(&self.files) {
            Ok(config) => {
                self.current.store(Arc::new(config));
                *self
                    .stamp
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Remember the failed version too: it is retried when it changes again (a
                // writer that replaces both files one at a time), not every few seconds.
                *self
                    .stamp
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
                tracing::warn!(error = %e, "TLS reload failed; still serving the previous certificate");
                false
            }
        }
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
    .collect()
}

fn certs(path: &Path, setting: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{setting} {}: no PEM certificate in it",
        path.display()
    );
    Ok(certs)
}

/// The rustls configuration of `files`: the certificate chain and key, ALPN `h2` then
/// `http/1.1`, and the client-certificate check when a CA is given (a client may still
/// connect without one; a certificate it presents must chain to the CA).
fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let chain = certs(&files.cert, "server.tls_cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("server.tls_key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca, "server.tls_client_ca")? {
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("server.tls_client_ca {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| anyhow::anyhow!("server.tls_client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        anyhow::anyhow!(
            "server.tls_key {} does not go with server.tls_cert {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The subject of the verified client certificate of a TLS connection, if it showed one.
#[must_use]
pub(super) fn client_certificate(
    conn: &tokio_rustls::rustls::ServerConnection,
) -> Option<crate::auth::ClientCertificate> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(crate::auth::ClientCertificate {
        subject: cert.subject().to_string(),
    })
}
