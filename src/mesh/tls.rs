//! TLS for the mesh: TLS 1.3 only, mutual authentication against the
//! cluster CA, the `ring` crypto provider (chosen explicitly: it builds
//! with a C compiler alone, no cmake, and quickly).
//!
//! Both sides present their node certificate and verify the other's
//! chain against the cluster CA. The client also checks that the server's
//! certificate is valid for the name of the node it meant to reach. Which
//! node a client is, is decided from its certificate after the handshake
//! ([`cert_node`]).

use super::Refusal;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a node's TLS material lives.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    /// The cluster CA certificate (`ca.pem`).
    pub ca: PathBuf,
    /// This node's certificate (`<node>.pem`).
    pub cert: PathBuf,
    /// This node's private key (`<node>.key`).
    pub key: PathBuf,
}

impl TlsPaths {
    /// The files `ordo certs` wrote for `node` into `dir`.
    pub fn in_dir(dir: &Path, node: &str) -> TlsPaths {
        TlsPaths {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{node}.pem")),
            key: dir.join(format!("{node}.key")),
        }
    }
}

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| file_error(ca, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The server side: requires a client certificate chaining to the CA.
pub fn server_config(paths: &TlsPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = roots(&paths.ca)?;
    let certs = load_certs(&paths.cert)?;
    let key = load_key(&paths.key)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| file_error(&paths.ca, format!("cannot verify clients with it: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            file_error(
                &paths.key,
                format!("does not go with {}: {e}", paths.cert.display()),
            )
        })?;
    // No resumption: every connection is a full handshake, so every
    // connection's peer is verified afresh.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client side: presents this node's certificate and verifies the
/// server's against the CA (and, per connection, its name).
pub fn client_config(paths: &TlsPaths) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = roots(&paths.ca)?;
    let certs = load_certs(&paths.cert)?;
    let key = load_key(&paths.key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| {
            file_error(
                &paths.key,
                format!("does not go with {}: {e}", paths.cert.display()),
            )
        })?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Check that this node's own certificate chains to the cluster CA, as
/// its peers will: a node with the wrong files is told at start, not by
/// its peers' refusals.
pub fn check_own_cert(paths: &TlsPaths) -> Result<(), TlsError> {
    let roots = roots(&paths.ca)?;
    let certs = load_certs(&paths.cert)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| file_error(&paths.ca, format!("cannot verify clients with it: {e}")))?;
    verifier
        .verify_client_cert(&certs[0], &certs[1..], UnixTime::now())
        .map_err(|e| {
            file_error(
                &paths.cert,
                format!("not accepted by the CA in {}: {e}", paths.ca.display()),
            )
        })?;
    Ok(())
}

/// The name to verify a peer's server certificate against.
pub fn server_name(node: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(node.to_string())
        .map_err(|e| TlsError::Config(format!("node name {node:?} is not a DNS name: {e}")))
}

/// The DNS names a certificate presents (for log messages only).
pub fn presented_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee.valid_dns_names().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// The configured nodes (indexes into `nodes`) that `cert` is valid for,
/// by the same name check a TLS client makes.
pub fn cert_node(cert: &CertificateDer<'_>, nodes: &[String]) -> Vec<usize> {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    nodes
        .iter()
        .enumerate()
        .filter(|(_, name)| {
            ServerName::try_from(name.as_str())
                .is_ok_and(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok())
        })
        .map(|(i, _)| i)
        .collect()
}

/// Why a handshake failed, as a refusal kind and a readable reason:
/// "unknown CA" for a certificate that does not chain to the cluster CA.
pub fn handshake_reason(err: &std::io::Error) -> (Refusal, String) {
    use rustls::{AlertDescription, CertificateError, Error};
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return (Refusal::Handshake, format!("TLS handshake failed: {err}"));
    };
    match tls {
        // BadSignature: an issuer of the same name (another cluster's CA
        // made by `ordo certs`) that did not sign it.
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | Error::InvalidCertificate(CertificateError::BadSignature) => (
            Refusal::UnknownCa,
            format!("unknown CA: the peer's certificate is not signed by the cluster CA ({tls})"),
        ),
        Error::AlertReceived(AlertDescription::UnknownCA) => (
            Refusal::UnknownCa,
            format!("unknown CA: the peer does not accept this node's certificate ({tls})"),
        ),
        // What a peer sends for our BadSignature: it trusts another CA
        // of the same name (a second `ordo certs` run for this cluster).
        Error::AlertReceived(AlertDescription::DecryptError) => (
            Refusal::UnknownCa,
            format!(
                "unknown CA: the peer cannot verify this node's certificate; it trusts \
                 another CA of the same name? ({tls})"
            ),
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => (
            Refusal::UnknownName,
            format!("certificate name does not match configured node ({tls})"),
        ),
        Error::NoCertificatesPresented => (Refusal::Handshake, "no client certificate".to_string()),
        other => (Refusal::Handshake, format!("TLS handshake failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason_of(e: rustls::Error) -> Refusal {
        handshake_reason(&std::io::Error::new(std::io::ErrorKind::InvalidData, e)).0
    }

    #[test]
    fn a_certificate_from_a_same_named_ca_reads_as_unknown_ca_on_both_sides() {
        use rustls::{AlertDescription, CertificateError, Error};
        // The side that checks the certificate...
        assert_eq!(
            reason_of(Error::InvalidCertificate(CertificateError::BadSignature)),
            Refusal::UnknownCa
        );
        // ...and the side that receives its alert.
        assert_eq!(
            reason_of(Error::AlertReceived(AlertDescription::DecryptError)),
            Refusal::UnknownCa
        );
        assert_eq!(
            reason_of(Error::AlertReceived(AlertDescription::HandshakeFailure)),
            Refusal::Handshake
        );
    }
}
