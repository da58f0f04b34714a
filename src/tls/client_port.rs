//! TLS on the client port (and so on the admin API, which it serves):
//! TLS 1.2 and 1.3, a certificate and key, and optionally client
//! certificates verified against a CA.
//!
//! Rotation: the server's configuration never changes; its certificate
//! comes from a resolver and its client verifier from a delegate, both of
//! which [`ClientPortTls::apply`] swaps. Connections already open keep
//! their session; new handshakes get the new files. A reload that fails
//! (a missing file, a key that does not match) changes nothing.

use super::files::{certified_key, roots};
use super::{TlsError, provider};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// The files of the client port's TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate this CA (bundle) signed.
    pub client_ca: Option<PathBuf>,
}

/// Loaded and checked files, ready for [`ClientPortTls::apply`].
pub struct Prepared(Current);

/// What a reload swaps.
struct Current {
    key: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
}

fn load(files: &ClientTlsFiles) -> Result<Current, TlsError> {
    let key = certified_key(&files.cert, &files.key)?;
    let verifier = match &files.client_ca {
        Some(ca) => WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
            .build()
            .map_err(|e| {
                super::files::file_error(ca, format!("cannot verify clients with it: {e}"))
            })?,
        None => Arc::new(NoClients),
    };
    Ok(Current { key, verifier })
}

/// The client port's TLS: the server configuration to serve with, and
/// the handle that reloads its files.
#[derive(Clone)]
pub struct ClientPortTls {
    current: Arc<RwLock<Current>>,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ClientPortTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientPortTls")
    }
}

impl ClientPortTls {
    pub fn new(files: &ClientTlsFiles) -> Result<ClientPortTls, TlsError> {
        let current = Arc::new(RwLock::new(load(files)?));
        let delegate = Arc::new(Delegate(current.clone()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(delegate.clone())
            .with_cert_resolver(delegate);
        // No session resumption: a resumed session would skip the client
        // certificate check against a CA that may have been rotated since.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(ClientPortTls {
            current,
            config: Arc::new(config),
        })
    }

    /// The configuration to serve with (it never changes; what it
    /// resolves does).
    pub fn server_config(&self) -> ServerConfig {
        (*self.config).clone()
    }

    /// Load and check what [`ClientPortTls::apply`] would use.
    pub fn prepare(files: &ClientTlsFiles) -> Result<Prepared, TlsError> {
        load(files).map(Prepared)
    }

    /// Use `next` for new handshakes from now on.
    pub fn apply(&self, next: Prepared) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next.0;
    }
}

/// No client certificates: not offered, and anything that would check
/// one fails. rustls's own `no_client_auth()` verifier panics in those
/// methods, and a reload that drops `client_ca` can reach them: a
/// handshake that was offered client authentication before the swap
/// verifies after it.
#[derive(Debug)]
struct NoClients;

const NOT_ASKED: &str = "client certificates are no longer asked for";

impl ClientCertVerifier for NoClients {
    fn offer_client_auth(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Err(rustls::Error::General(NOT_ASKED.into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(NOT_ASKED.into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(NOT_ASKED.into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // Never empty: rustls may ask even when it offered nothing.
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Resolves the certificate and verifies clients with what is current.
struct Delegate(Arc<RwLock<Current>>);

impl std::fmt::Debug for Delegate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client port TLS")
    }
}

impl Delegate {
    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .verifier
            .clone()
    }
}

impl ResolvesServerCert for Delegate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).key.clone())
    }
}

impl ClientCertVerifier for Delegate {
    fn offer_client_auth(&self) -> bool {
        self.verifier().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.verifier().client_auth_mandatory()
    }

    /// No hints: they would borrow from a verifier a reload may drop.
    /// Hints are optional; clients send the certificate they were given.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload that drops `client_ca` while a handshake that was offered
    /// client authentication is under way: the verifier it then reaches
    /// refuses, it does not panic (rustls's `no_client_auth()` would).
    #[test]
    fn no_client_verifier_refuses_instead_of_panicking() {
        let v = NoClients;
        assert!(!v.offer_client_auth());
        let cert = CertificateDer::from(vec![0u8; 8]);
        assert!(v.verify_client_cert(&cert, &[], UnixTime::now()).is_err());
        assert!(!v.supported_verify_schemes().is_empty());
    }
}
