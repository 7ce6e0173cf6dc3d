//! TLS set-up for SIP over TLS: rustls with the ring provider, TLS 1.2 and 1.3 only.
//!
//! The certificate and key come from the config; when it names none, a self-signed
//! certificate is made in memory at start (never written anywhere) and its SHA-256
//! fingerprint is printed so that a tester can pin it. rustls offers no weak suites:
//! TLS 1.3 AEADs and, for 1.2, ECDHE with AES-GCM or ChaCha20-Poly1305 only.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Certificate generation failed.
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate or key.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A ready server configuration and the certificate's SHA-256 fingerprint.
pub struct TlsSetup {
    /// For the acceptor.
    pub config: Arc<ServerConfig>,
    /// `AB:CD:...` of the leaf certificate.
    pub fingerprint: String,
    /// Whether the certificate was made at start.
    pub self_signed: bool,
}

/// Builds the TLS server configuration from PEM files, or a self-signed certificate
/// for `names` when both paths are `None`.
pub fn setup(
    cert: Option<&Path>,
    key: Option<&Path>,
    names: &[String],
) -> Result<TlsSetup, TlsError> {
    let (chain, key, self_signed) = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_error(cert, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_error(cert, e))?;
            if chain.is_empty() {
                return Err(TlsError::File {
                    path: cert.to_path_buf(),
                    message: "no certificate in the file".into(),
                });
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
            (chain, key, false)
        }
        _ => {
            let generated = rcgen::generate_simple_self_signed(names.to_vec())
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                generated.signing_key.serialize_der(),
            ));
            (vec![generated.cert.der().clone()], key, true)
        }
    };
    let fingerprint = fingerprint(&chain[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsSetup {
        config: Arc::new(config),
        fingerprint,
        self_signed,
    })
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// SHA-256 fingerprint in the usual colon-separated hex form.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_setup_gives_a_fingerprint() {
        let s = setup(None, None, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(s.self_signed);
        assert_eq!(s.fingerprint.len(), 32 * 3 - 1);
        // TLS 1.2 and 1.3 only.
        assert!(s.config.alpn_protocols.is_empty());
    }

    #[test]
    fn missing_files_are_named() {
        let Err(e) = setup(
            Some(Path::new("/nonexistent/cert.pem")),
            Some(Path::new("/nonexistent/key.pem")),
            &[],
        ) else {
            panic!("expected an error");
        };
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    }
}
