//! PEM files: certificates, private keys, CA bundles and certified keys,
//! with errors that name the file and what is wrong with it.

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    /// The file the error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::File { path, .. } => Some(path),
            TlsError::Config(_) => None,
        }
    }
}

pub fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE section found"));
    }
    for (i, c) in certs.iter().enumerate() {
        if let Err(e) = webpki::EndEntityCert::try_from(c) {
            return Err(file_error(
                path,
                format!("certificate {} does not parse: {e:?}", i + 1),
            ));
        }
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            file_error(path, "no PRIVATE KEY section found")
        }
        e => file_error(path, format!("bad PEM: {e}")),
    })
}

/// The CA certificates of a PEM bundle, as trust roots. A bundle may hold
/// several: the old and the new CA while a CA is being replaced.
pub fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| file_error(ca, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = load_certs(cert)?;
    let der = load_key(key)?;
    let signing = super::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| file_error(key, format!("not a usable private key: {e}")))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        file_error(
            key,
            format!(
                "is not the key of the certificate in {} ({e})",
                cert.display()
            ),
        )
    })?;
    Ok(Arc::new(ck))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_is_not_the_certificates_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["north".to_string(), "east".to_string()];
        crate::mesh::certs::make_certs("t", &names, dir.path()).unwrap();
        let p = |f: &str| dir.path().join(f);
        certified_key(&p("north.pem"), &p("north.key")).unwrap();
        let err = certified_key(&p("north.pem"), &p("east.key")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("east.key") && text.contains("is not the key of the certificate"),
            "{text}"
        );
        let err = load_certs(&p("north.key")).unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE"), "{err}");
        let err = load_key(&p("missing.key")).unwrap_err().to_string();
        assert!(
            err.contains("missing.key") && err.contains("cannot read"),
            "{err}"
        );
    }
}
