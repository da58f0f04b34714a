//! A test PKI for the client port and for https backends (the mesh has
//! its own, from `ordo certs`): one CA, server certificates for
//! `localhost` and `127.0.0.1`, and client certificates, as PEM files.

#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

pub struct Pki {
    pub dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and key written as `NAME.pem` and `NAME.key`.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA in `dir` (`ca.pem`).
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "ordo test client-port CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca.pem");
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate valid for `sans` only.
    pub fn server_for(&self, name: &str, sans: &[&str]) -> Issued {
        self.issue(name, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn issue(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("names");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        let out = Issued {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        // Written aside and renamed into place, so a reader never sees a
        // half-written file.
        let tmp = |p: &Path| PathBuf::from(format!("{}.tmp", p.display()));
        std::fs::write(tmp(&out.key), key.serialize_pem()).expect("key");
        std::fs::write(tmp(&out.cert), cert.pem()).expect("cert");
        std::fs::rename(tmp(&out.key), &out.key).expect("rename key");
        std::fs::rename(tmp(&out.cert), &out.cert).expect("rename cert");
        out
    }

    /// A server certificate valid for `localhost` and `127.0.0.1`.
    pub fn server(&self, name: &str) -> Issued {
        self.issue(
            name,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(name, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A ureq TLS configuration that trusts `ca` and presents `client`.
pub fn ureq_tls(ca: &Path, client: Option<&Issued>) -> ureq::tls::TlsConfig {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let pem = std::fs::read(ca).expect("read CA");
    let roots = RootCerts::new_with_certs(&[Certificate::from_pem(&pem).expect("CA PEM")]);
    let mut b = TlsConfig::builder().root_certs(roots);
    if let Some(c) = client {
        let cert = Certificate::from_pem(&std::fs::read(&c.cert).expect("cert")).expect("PEM");
        let key = PrivateKey::from_pem(&std::fs::read(&c.key).expect("key")).expect("PEM");
        b = b.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    b.build()
}
