//! The client side of `https://` backends: TLS 1.2 and 1.3, the system's
//! trust roots or a CA bundle named per service, an optional client
//! certificate, SNI from the backend URL's host, and the host name check
//! always on.

use super::files::{load_certs, load_key, roots};
use super::{TlsError, provider};
use rustls::{ClientConfig, RootCertStore};
use std::path::PathBuf;
use std::sync::Arc;

/// A service's backend TLS settings (`services[].backend_tls`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendTlsFiles {
    /// Trust this CA bundle instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate and key to present.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "none found".into());
        return Err(TlsError::Config(format!(
            "no system trust roots ({why}): install ca-certificates, or name a CA in backend_tls.ca"
        )));
    }
    Ok(Arc::new(roots))
}

/// The client configuration for one service's backend.
pub fn client_config(files: &BackendTlsFiles) -> Result<ClientConfig, TlsError> {
    let roots = match &files.ca {
        Some(ca) => roots(ca)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            // Checked to belong together first, for a clear error.
            super::files::certified_key(cert, key)?;
            builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| super::files::file_error(key, e))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Config(
                "backend_tls: cert and key go together".into(),
            ));
        }
    };
    // No ALPN: hyper-rustls sets it (HTTP/1.1 only is what it offers).
    Ok(config)
}
