//! TLS for the mesh: TLS 1.3 only, mutual authentication, the `ring`
//! crypto provider (chosen explicitly: it builds with a C compiler alone).
//!
//! Both sides present their node certificate. A peer is trusted by the
//! cluster CA or, for a node whose entry lists pins, by its pins only
//! (`crate::tls::pins`): a pinned node's certificate must match one of
//! its pins, whoever signed it, and a certificate signed by the CA that
//! does not match is refused. Either way the certificate must be valid
//! for the node's name. The client checks the server against the node it
//! meant to reach; the server accepts any certificate one of these rules
//! could accept and decides which node the client is after the handshake
//! ([`Trust::identify`]).
//!
//! Everything a node trusts is one immutable [`PeerTls`]; a reload builds
//! a new one and the mesh swaps it in (`Mesh::reload`).

use super::Refusal;
use crate::tls::files::{certified_key, file_error, roots};
use crate::tls::pins::{Pin, any_matches};
use crate::tls::provider;
pub use crate::tls::{TlsError, load_certs, load_key};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Where a node's TLS material lives, and whom it trusts.
#[derive(Clone, Debug, Default)]
pub struct TlsPaths {
    /// The cluster CA certificate bundle (`ca.pem`); `None` when every
    /// node is pinned.
    pub ca: Option<PathBuf>,
    /// This node's certificate (`<node>.pem`).
    pub cert: PathBuf,
    /// This node's private key (`<node>.key`).
    pub key: PathBuf,
    /// Node name -> the pins its certificate must match (instead of the
    /// CA). Nodes not listed, or with no pins, are trusted by the CA.
    pub pins: BTreeMap<String, Vec<Pin>>,
}

impl TlsPaths {
    /// The files `ordo certs` wrote for `node` into `dir`.
    pub fn in_dir(dir: &Path, node: &str) -> TlsPaths {
        TlsPaths {
            ca: Some(dir.join("ca.pem")),
            cert: dir.join(format!("{node}.pem")),
            key: dir.join(format!("{node}.key")),
            pins: BTreeMap::new(),
        }
    }
}

/// Whom the mesh trusts: per node its pins, or else the cluster CA.
pub struct Trust {
    names: Vec<String>,
    /// By node index; empty: trusted by the CA.
    pins: Vec<Vec<Pin>>,
    ca_clients: Option<Arc<dyn ClientCertVerifier>>,
    ca_servers: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("names", &self.names)
            .field("ca", &self.ca_clients.is_some())
            .finish()
    }
}

impl Trust {
    /// The trust of a mesh of `names` (in node id order).
    pub fn load(paths: &TlsPaths, names: &[String]) -> Result<Arc<Trust>, TlsError> {
        for n in paths.pins.keys() {
            if !names.contains(n) {
                return Err(TlsError::Config(format!(
                    "pins for {n:?}, which is not a node"
                )));
            }
        }
        let pins: Vec<Vec<Pin>> = names
            .iter()
            .map(|n| paths.pins.get(n).cloned().unwrap_or_default())
            .collect();
        let (ca_clients, ca_servers) = match &paths.ca {
            Some(ca) => {
                let roots = roots(ca)?;
                let clients: Arc<dyn ClientCertVerifier> =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                        .build()
                        .map_err(|e| file_error(ca, format!("cannot verify peers with it: {e}")))?;
                let servers = WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| file_error(ca, format!("cannot verify peers with it: {e}")))?;
                (Some(clients), Some(servers))
            }
            None => {
                if let Some((name, _)) = names.iter().zip(&pins).find(|(_, p)| p.is_empty()) {
                    return Err(TlsError::Config(format!(
                        "no cluster CA (tls.ca), and node {name:?} has no pins: \
                         trust every node by a CA or by pins"
                    )));
                }
                (None, None)
            }
        };
        Ok(Arc::new(Trust {
            names: names.to_vec(),
            pins,
            ca_clients,
            ca_servers,
            provider: provider(),
        }))
    }

    fn ca_accepts(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((ee, rest)) = chain.split_first() else {
            return false;
        };
        self.ca_clients
            .as_ref()
            .is_some_and(|v| v.verify_client_cert(ee, rest, UnixTime::now()).is_ok())
    }

    /// Which node a verified certificate chain belongs to: a node whose
    /// name it is valid for and whose pins it matches, or (unpinned) whose
    /// CA signed it.
    pub fn identify(&self, chain: &[CertificateDer<'_>]) -> Result<usize, (Refusal, String)> {
        let Some(ee) = chain.first() else {
            return Err((Refusal::Handshake, "no client certificate".into()));
        };
        let presented = presented_names(ee);
        let by_name = cert_node(ee, &self.names);
        if by_name.is_empty() {
            return Err((
                Refusal::UnknownName,
                format!(
                    "certificate name {presented:?} does not match configured node names {:?}",
                    self.names
                ),
            ));
        }
        let trusted: Vec<usize> = by_name
            .iter()
            .copied()
            .filter(|&i| {
                if self.pins[i].is_empty() {
                    self.ca_accepts(chain)
                } else {
                    any_matches(&self.pins[i], ee)
                }
            })
            .collect();
        match trusted.as_slice() {
            [one] => Ok(*one),
            [] => match by_name.iter().find(|&&i| !self.pins[i].is_empty()) {
                Some(&i) => Err((
                    Refusal::Unpinned,
                    format!(
                        "the certificate for {:?} matches none of its pins ({})",
                        self.names[i],
                        Pin::of(ee).0
                    ),
                )),
                None => Err((
                    Refusal::UnknownCa,
                    "unknown CA: the peer's certificate is not signed by the cluster CA".into(),
                )),
            },
            several => Err((
                Refusal::UnknownName,
                format!(
                    "certificate name {presented:?} matches several configured nodes {:?}",
                    several
                        .iter()
                        .map(|i| self.names[*i].as_str())
                        .collect::<Vec<_>>()
                ),
            )),
        }
    }
}

/// The handshake signature checks both verifiers share: the provider's
/// algorithms, on a `Trust` in field 0 (both traits name these methods
/// alike).
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.provider.signature_verification_algorithms;
            verify_tls12_signature(message, cert, dss, algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.provider.signature_verification_algorithms;
            verify_tls13_signature(message, cert, dss, algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0
                .provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// The server side of the mesh: accepts a client certificate that some
/// node's pins or the CA accept (who it is is decided after).
#[derive(Debug)]
struct AnyPeer(Arc<Trust>);

impl ClientCertVerifier for AnyPeer {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0
            .ca_clients
            .as_ref()
            .map_or(&[], |v| v.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.0.pins.iter().any(|p| any_matches(p, end_entity)) {
            return Ok(ClientCertVerified::assertion());
        }
        match &self.0.ca_clients {
            Some(ca) => ca.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    handshake_signatures!();
}

/// The client side of the mesh: the server must be the node it meant to
/// reach, by that node's pins or by the CA, and valid for its name.
#[derive(Debug)]
struct NamedPeer(Arc<Trust>);

impl ServerCertVerifier for NamedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let t = &self.0;
        // Only ever a node's name (`outgoing` dials nodes); anything else
        // is refused rather than trusted by the CA.
        let node = match server_name {
            ServerName::DnsName(d) => t.names.iter().position(|n| n == d.as_ref()),
            _ => None,
        };
        let Some(node) = node else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        };
        // As the server side does: one certificate, one node.
        if cert_node(end_entity, &t.names).len() > 1 {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        let pins = t.pins[node].as_slice();
        if !pins.is_empty() {
            if !any_matches(pins, end_entity) {
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
            let ee = webpki::EndEntityCert::try_from(end_entity)
                .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
            ee.verify_is_valid_for_subject_name(server_name)
                .map_err(|_| {
                    rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                })?;
            return Ok(ServerCertVerified::assertion());
        }
        match &t.ca_servers {
            Some(ca) => {
                ca.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    handshake_signatures!();
}

/// The server side: requires a client certificate that `trust` accepts.
pub fn server_config(
    key: Arc<CertifiedKey>,
    trust: &Arc<Trust>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(AnyPeer(trust.clone())))
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    // No resumption: every connection is a full handshake, so every
    // connection's peer is verified afresh.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client side: presents this node's certificate and verifies the
/// server as the node it connects to.
pub fn client_config(
    key: Arc<CertifiedKey>,
    trust: &Arc<Trust>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamedPeer(trust.clone())))
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Everything one node of the mesh trusts and presents.
#[derive(Clone)]
pub struct PeerTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
    pub trust: Arc<Trust>,
    /// The certificate this node presents.
    pub own: CertificateDer<'static>,
}

impl PeerTls {
    /// Load node `me`'s material and check it as its peers will: the key
    /// is the certificate's, the certificate is valid for `me`'s name and
    /// is trusted by `me`'s pins or the CA. A node with the wrong files is
    /// told at start (or at reload), not by its peers' refusals.
    pub fn load(paths: &TlsPaths, names: &[String], me: usize) -> Result<PeerTls, TlsError> {
        let trust = Trust::load(paths, names)?;
        // Read once: what is checked here is what is presented.
        let key = certified_key(&paths.cert, &paths.key)?;
        let chain = key.cert.clone();
        let Some(own) = chain.first().cloned() else {
            return Err(file_error(&paths.cert, "no certificate"));
        };
        let name = &names[me];
        if !cert_node(&own, names).contains(&me) {
            return Err(file_error(
                &paths.cert,
                format!(
                    "the certificate is for {:?}, not for this node {name:?}",
                    presented_names(&own)
                ),
            ));
        }
        if !trust.pins[me].is_empty() {
            if !any_matches(&trust.pins[me], &own) {
                return Err(file_error(
                    &paths.cert,
                    format!(
                        "matches none of the pins of node {name:?} ({}; its pins: {})",
                        Pin::of(&own).0,
                        trust.pins[me]
                            .iter()
                            .map(Pin::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        } else {
            // As its peers will check it: as a client certificate, and as
            // a server certificate for its name (another key usage).
            let ca = paths.ca.as_deref().unwrap_or(Path::new("tls.ca"));
            let as_server = trust.ca_servers.as_ref().map(|v| {
                v.verify_server_cert(&own, &chain[1..], &server_name(name)?, &[], UnixTime::now())
                    .map_err(|e| TlsError::Config(e.to_string()))
            });
            if !trust.ca_accepts(&chain) {
                return Err(file_error(
                    &paths.cert,
                    format!(
                        "not accepted by the CA in {} (as a client certificate)",
                        ca.display()
                    ),
                ));
            }
            if let Some(Err(e)) = as_server {
                return Err(file_error(
                    &paths.cert,
                    format!(
                        "not accepted by the CA in {} as a server certificate for {name:?}: {e}",
                        ca.display()
                    ),
                ));
            }
        }
        Ok(PeerTls {
            acceptor: TlsAcceptor::from(server_config(key.clone(), &trust)?),
            connector: TlsConnector::from(client_config(key, &trust)?),
            trust,
            own,
        })
    }
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
    use rustls::{AlertDescription, Error};
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
        Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => (
            Refusal::Unpinned,
            format!("the peer's certificate matches none of the pins configured for it ({tls})"),
        ),
        Error::AlertReceived(AlertDescription::AccessDenied) => (
            Refusal::Unpinned,
            format!(
                "the peer does not accept this node's certificate: it is not among the pins \
                 the peer has for this node ({tls})"
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
        use rustls::{AlertDescription, Error};
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

    #[test]
    fn a_pin_mismatch_reads_as_unpinned_on_both_sides() {
        use rustls::{AlertDescription, Error};
        let checked = Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        // The alert rustls sends for it is what the other side reads.
        assert_eq!(
            AlertDescription::from(CertificateError::ApplicationVerificationFailure),
            AlertDescription::AccessDenied
        );
        assert_eq!(reason_of(checked), Refusal::Unpinned);
        assert_eq!(
            reason_of(Error::AlertReceived(AlertDescription::AccessDenied)),
            Refusal::Unpinned
        );
    }

    fn names() -> Vec<String> {
        ["north", "east", "west"].map(String::from).to_vec()
    }

    #[test]
    fn a_pinned_node_is_trusted_by_its_pin_and_not_by_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        crate::mesh::certs::make_certs("t", &names(), dir.path()).unwrap();
        // A second certificate for "west" from the same CA: the CA would
        // accept it; west's pin does not.
        let other = tempfile::tempdir().unwrap();
        crate::mesh::certs::issue(dir.path(), "t", &["west".to_string()], other.path()).unwrap();
        let chain = |d: &Path, n: &str| load_certs(&d.join(format!("{n}.pem"))).unwrap();
        let west = chain(dir.path(), "west");
        let mut paths = TlsPaths::in_dir(dir.path(), "north");
        paths
            .pins
            .insert("west".into(), vec![Pin::of(&west[0]).1.unwrap()]);
        let trust = Trust::load(&paths, &names()).unwrap();
        assert_eq!(trust.identify(&west), Ok(2));
        assert_eq!(trust.identify(&chain(dir.path(), "east")), Ok(1));
        let (kind, why) = trust.identify(&chain(other.path(), "west")).unwrap_err();
        assert_eq!(kind, Refusal::Unpinned, "{why}");
        assert!(why.contains("west"), "{why}");
        // Node west itself refuses to start with the wrong certificate.
        let mut own = paths.clone();
        own.cert = other.path().join("west.pem");
        own.key = other.path().join("west.key");
        let err = PeerTls::load(&own, &names(), 2).err().unwrap().to_string();
        assert!(err.contains("matches none of the pins"), "{err}");
        // Without a CA every node needs pins.
        paths.ca = None;
        let err = Trust::load(&paths, &names()).unwrap_err().to_string();
        assert!(
            err.contains("no cluster CA") && err.contains("north"),
            "{err}"
        );
    }

    /// The client side alone (the server may refuse for its own reasons
    /// too): a pinned node's server certificate must match its pin and be
    /// valid for its name; the CA alone is not enough, a name that is no
    /// node's is refused.
    #[test]
    fn the_client_side_checks_pins_and_names_of_the_node_it_dialled() {
        let dir = tempfile::tempdir().unwrap();
        crate::mesh::certs::make_certs("t", &names(), dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        crate::mesh::certs::issue(dir.path(), "t", &["west".to_string()], other.path()).unwrap();
        let cert = |d: &Path, n: &str| load_certs(&d.join(format!("{n}.pem"))).unwrap().remove(0);
        let west = cert(dir.path(), "west");
        let east = cert(dir.path(), "east");
        let mut paths = TlsPaths::in_dir(dir.path(), "north");
        // west pinned; east pinned to its own key, so its pin matches but
        // only for the name "east".
        paths
            .pins
            .insert("west".into(), vec![Pin::of(&west).1.unwrap()]);
        let verifier = NamedPeer(Trust::load(&paths, &names()).unwrap());
        let check = |c: &CertificateDer<'_>, name: &str| {
            let sn = ServerName::try_from(name.to_string()).unwrap();
            verifier.verify_server_cert(c, &[], &sn, &[], UnixTime::now())
        };
        assert!(check(&west, "west").is_ok());
        // CA-signed for west's name, not west's pin.
        let err = check(&cert(other.path(), "west"), "west").unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        );
        // west's pin only pins west: east's certificate as west fails, and
        // west's certificate for another (pinned) name fails on the name.
        assert!(check(&east, "west").is_err());
        paths
            .pins
            .insert("east".into(), vec![Pin::of(&west).1.unwrap()]);
        let verifier = NamedPeer(Trust::load(&paths, &names()).unwrap());
        let sn = ServerName::try_from("east").unwrap();
        let err = verifier
            .verify_server_cert(&west, &[], &sn, &[], UnixTime::now())
            .unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        );
        // Not a node: refused, not left to the CA.
        let sn = ServerName::try_from("south").unwrap();
        assert!(
            verifier
                .verify_server_cert(&east, &[], &sn, &[], UnixTime::now())
                .is_err()
        );
    }
}
