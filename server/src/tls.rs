//! TLS toward the analyzer: one client configuration from the pipeline's `tls` section, used by
//! the WebSocket subscriber (`wss://`) and the topology client (`https://`).
//!
//! `tls.ca_cert`, `tls.client_cert` and `tls.client_key` each hold PEM text inline, or (in
//! `sluice run` only) the path of a PEM file, as upstream. `sluice serve` refuses paths when the
//! definition is accepted ([`crate::config`]), so a tenant never names a host file. Files are
//! read with a size cap, and only regular files (`/dev/zero` is refused, not read forever).

use std::io::Read as _;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSection;

/// Largest PEM file or text accepted.
pub const MAX_PEM_BYTES: usize = 256 << 10;

/// What marks a value as inline PEM rather than a path.
const PEM_START: &str = "-----BEGIN ";

/// Why the TLS settings can't be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("tls.{key}: cannot read {path}: {message}")]
    Read {
        /// `ca_cert`, `client_cert` or `client_key`.
        key: &'static str,
        /// The path.
        path: String,
        /// Why.
        message: String,
    },
    /// The PEM text holds nothing usable.
    #[error("tls.{key}: {message}")]
    Pem {
        /// `ca_cert`, `client_cert` or `client_key`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material.
    #[error("tls: {0}")]
    Config(String),
}

/// Whether a `tls.*` value is inline PEM text (else it is a path).
pub fn is_inline_pem(value: &str) -> bool {
    value.trim_start().starts_with(PEM_START)
}

/// Whether the section names any TLS material (the analyzer is then reached over TLS).
pub fn is_set(tls: &TlsSection) -> bool {
    !(tls.ca_cert.is_empty() && tls.client_cert.is_empty() && tls.client_key.is_empty())
}

/// The PEM bytes of a `tls.*` value: the text itself, or the file it names.
fn pem_of(key: &'static str, value: &str) -> Result<Vec<u8>, TlsError> {
    if is_inline_pem(value) {
        return Ok(value.as_bytes().to_vec());
    }
    let read_error = |message: String| TlsError::Read {
        key,
        path: value.to_string(),
        message,
    };
    let file = std::fs::File::open(value).map_err(|e| read_error(e.to_string()))?;
    let meta = file.metadata().map_err(|e| read_error(e.to_string()))?;
    if !meta.is_file() {
        return Err(read_error("not a regular file".into()));
    }
    let mut pem = Vec::new();
    file.take(MAX_PEM_BYTES as u64 + 1)
        .read_to_end(&mut pem)
        .map_err(|e| read_error(e.to_string()))?;
    if pem.len() > MAX_PEM_BYTES {
        return Err(read_error(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    Ok(pem)
}

fn certificates(key: &'static str, value: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = pem_of(key, value)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            key,
            message: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            key,
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The rustls client configuration for the section: its CA (else the public roots) and its
/// client certificate. `None` when the section is empty.
pub fn client_config(tls: &TlsSection) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    if !is_set(tls) {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    if tls.ca_cert.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        for cert in certificates("ca_cert", &tls.ca_cert)? {
            roots.add(cert).map_err(|e| TlsError::Pem {
                key: "ca_cert",
                message: e.to_string(),
            })?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_root_certificates(roots);
    let config = match (tls.client_cert.is_empty(), tls.client_key.is_empty()) {
        (true, true) => builder.with_no_client_auth(),
        (false, false) => {
            let chain = certificates("client_cert", &tls.client_cert)?;
            let key = PrivateKeyDer::from_pem_slice(&pem_of("client_key", &tls.client_key)?)
                .map_err(|e| TlsError::Pem {
                    key: "client_key",
                    message: format!("no private key: {e}"),
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Config(e.to_string()))?
        }
        (true, false) => {
            return Err(TlsError::Pem {
                key: "client_cert",
                message: "is required with tls.client_key".into(),
            });
        }
        (false, true) => {
            return Err(TlsError::Pem {
                key: "client_key",
                message: "is required with tls.client_cert".into(),
            });
        }
    };
    Ok(Some(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_inline_pem_are_told_apart() {
        assert!(is_inline_pem("-----BEGIN CERTIFICATE-----\nMIIB\n"));
        assert!(is_inline_pem("\n  -----BEGIN PRIVATE KEY-----"));
        assert!(!is_inline_pem("/etc/ssl/ca.pem"));
        assert!(!is_inline_pem(""));
    }

    #[test]
    fn device_files_and_missing_material_are_refused() {
        let tls = TlsSection {
            ca_cert: "/dev/zero".into(),
            ..Default::default()
        };
        let e = client_config(&tls).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let tls = TlsSection {
            ca_cert: "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into(),
            ..Default::default()
        };
        assert!(client_config(&tls).is_err());
        let tls = TlsSection {
            client_key: "-----BEGIN PRIVATE KEY-----\n".into(),
            ..Default::default()
        };
        let e = client_config(&tls).unwrap_err().to_string();
        assert!(e.contains("client_cert: is required"), "{e}");
        assert!(client_config(&TlsSection::default()).unwrap().is_none());
    }
}
