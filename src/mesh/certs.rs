//! `ordo certs`: a certificate authority for a new cluster and one
//! certificate per node, signed by it.
//!
//! The mesh authenticates peers with these: every node trusts the
//! cluster CA (`ca.pem`) only, and a node's certificate carries its name
//! as the common name and as the one DNS subject alternative name. The CA
//! key (`ca.key`) is needed only to make certificates; keep it offline.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// How long the certificates made here are valid.
const VALID_DAYS: i64 = 10 * 365;

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("bad node name {name:?}: {why}")]
    BadNodeName { name: String, why: &'static str },
    #[error("bad cluster name {name:?}: {why}")]
    BadClusterName { name: String, why: &'static str },
    #[error("node {0:?} is listed twice")]
    DuplicateNode(String),
    #[error("no nodes given")]
    NoNodes,
    #[error("{}: already exists; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot sign with this CA: {0}")]
    NotOurCa(String),
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A node name: 1 to 32 of `a-z`, `0-9` and `-`, not starting or ending
/// with `-` (so it is a valid DNS label).
pub fn validate_node_name(name: &str) -> Result<(), CertError> {
    check_label(name, 32).map_err(|why| CertError::BadNodeName {
        name: name.to_string(),
        why,
    })
}

/// A cluster name follows the node name rules, up to 64 characters.
pub fn validate_cluster_name(name: &str) -> Result<(), CertError> {
    check_label(name, 64).map_err(|why| CertError::BadClusterName {
        name: name.to_string(),
        why,
    })
}

/// Node and cluster names: they end up in certificate DNS names.
pub fn check_label(name: &str, max: usize) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > max {
        return Err(if max == 32 {
            "longer than 32 characters"
        } else {
            "longer than 64 characters"
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only a-z, 0-9 and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must not start or end with '-'");
    }
    Ok(())
}

/// At least one node, each a valid name, none twice.
fn check_nodes(nodes: &[String]) -> Result<(), CertError> {
    if nodes.is_empty() {
        return Err(CertError::NoNodes);
    }
    for (i, name) in nodes.iter().enumerate() {
        validate_node_name(name)?;
        if nodes[..i].contains(name) {
            return Err(CertError::DuplicateNode(name.clone()));
        }
    }
    Ok(())
}

/// Make a CA for `cluster` and a certificate for each of `nodes` in
/// `out` (created if missing): `ca.pem`, `ca.key`, `<node>.pem`,
/// `<node>.key`. Key files are mode 0600. Existing files are never
/// overwritten: the call fails before writing anything.
pub fn make_certs(cluster: &str, nodes: &[String], out: &Path) -> Result<(), CertError> {
    validate_cluster_name(cluster)?;
    check_nodes(nodes)?;
    std::fs::create_dir_all(out).map_err(|source| CertError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut files = vec![out.join("ca.pem"), out.join("ca.key")];
    for name in nodes {
        files.push(out.join(format!("{name}.pem")));
        files.push(out.join(format!("{name}.key")));
    }
    if let Some(existing) = files.iter().find(|p| p.exists()) {
        return Err(CertError::Exists(existing.clone()));
    }

    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let ca = ca_params(cluster, now).self_signed(&ca_key)?;

    let mut written = Vec::new();
    write_file(&files[0], ca.pem().as_bytes(), false, &mut written)?;
    write_file(
        &files[1],
        ca_key.serialize_pem().as_bytes(),
        true,
        &mut written,
    )?;

    for name in nodes {
        let (cert, key) = node_cert(cluster, name, &ca, &ca_key)?;
        write_node(out, name, &cert, &key, &mut written)?;
    }
    Ok(())
}

/// Certificates for `nodes` signed by the CA that `ordo certs` made in
/// `ca_dir` (its `ca.pem` and `ca.key`), written into `out`: a node's new
/// certificate for a rotation, or a node added to the cluster. Existing
/// files are never overwritten.
pub fn issue(ca_dir: &Path, cluster: &str, nodes: &[String], out: &Path) -> Result<(), CertError> {
    validate_cluster_name(cluster)?;
    check_nodes(nodes)?;
    let read = |f: &str| {
        let path = ca_dir.join(f);
        std::fs::read_to_string(&path).map_err(|source| CertError::Io { path, source })
    };
    let ca_key = KeyPair::from_pem(&read("ca.key")?)?;
    // The CA as an issuer: the name `make_certs` gave it and its key, so
    // what it signs chains to ca.pem (checked below, before writing).
    let now = OffsetDateTime::now_utc();
    let ca = ca_params(cluster, now).self_signed(&ca_key)?;
    let roots = crate::tls::files::roots(&ca_dir.join("ca.pem"))
        .map_err(|e| CertError::NotOurCa(format!("{e}")))?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, crate::tls::provider())
            .build()
            .map_err(|e| {
                CertError::NotOurCa(format!("{}: {e}", ca_dir.join("ca.pem").display()))
            })?;
    let mut made = Vec::new();
    for name in nodes {
        let (cert, key) = node_cert(cluster, name, &ca, &ca_key)?;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes())
            .map_err(|e| CertError::NotOurCa(e.to_string()))?;
        verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .map_err(|e| {
                CertError::NotOurCa(format!(
                    "{}: what its key signs does not chain to it ({e}): is {cluster:?} the \
                     cluster it was made for?",
                    ca_dir.join("ca.pem").display()
                ))
            })?;
        made.push((name, cert, key));
    }
    std::fs::create_dir_all(out).map_err(|source| CertError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    for name in nodes {
        for f in [format!("{name}.pem"), format!("{name}.key")] {
            if out.join(&f).exists() {
                return Err(CertError::Exists(out.join(f)));
            }
        }
    }
    let mut written = Vec::new();
    for (name, cert, key) in made {
        write_node(out, name, &cert, &key, &mut written)?;
    }
    Ok(())
}

/// The cluster CA's name, usages and validity.
fn ca_params(cluster: &str, now: OffsetDateTime) -> CertificateParams {
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("ordo cluster {cluster} CA"));
    dn.push(DnType::OrganizationName, format!("ordo cluster {cluster}"));
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::days(1);
    ca_params.not_after = now + Duration::days(VALID_DAYS);
    ca_params
}

/// One node's certificate (valid for its name, signed by the CA) and
/// key, as PEM.
fn node_cert(
    cluster: &str,
    name: &str,
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> Result<(String, String), CertError> {
    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, format!("ordo cluster {cluster}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(VALID_DAYS);
    let cert = params.signed_by(&key, ca, ca_key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_node(
    out: &Path,
    name: &str,
    cert: &str,
    key: &str,
    written: &mut Vec<PathBuf>,
) -> Result<(), CertError> {
    write_file(
        &out.join(format!("{name}.pem")),
        cert.as_bytes(),
        false,
        written,
    )?;
    write_file(
        &out.join(format!("{name}.key")),
        key.as_bytes(),
        true,
        written,
    )
}

/// Write a new file (never an existing one); keys are 0600 from the
/// moment they exist. On failure, remove what this run wrote.
fn write_file(
    path: &Path,
    bytes: &[u8],
    secret: bool,
    written: &mut Vec<PathBuf>,
) -> Result<(), CertError> {
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(path)?;
        written.push(path.to_path_buf());
        file.write_all(bytes)?;
        file.sync_all()
    })();
    result.map_err(|source| {
        for p in written.iter() {
            let _ = std::fs::remove_file(p);
        }
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists(path.to_path_buf())
        } else {
            CertError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_are_checked() {
        for bad in ["", "North", "a_b", "-a", "a-", "a.b", &"x".repeat(33)] {
            let err = validate_node_name(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        for good in ["a", "north", "eu-west-1", &"x".repeat(32)] {
            validate_node_name(good).unwrap();
        }
    }

    #[test]
    fn makes_a_ca_and_node_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec!["north".to_string(), "east".to_string()];
        make_certs("test", &nodes, dir.path()).unwrap();
        for f in ["ca.pem", "north.pem", "east.pem"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{f}");
        }
        for f in ["ca.key", "north.key", "east.key"] {
            let meta = std::fs::metadata(dir.path().join(f)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        }
        // Never overwrites.
        let err = make_certs("test", &nodes, dir.path()).unwrap_err();
        assert!(matches!(err, CertError::Exists(_)), "{err}");
        // Bad names and duplicates are refused before anything is written.
        let other = tempfile::tempdir().unwrap();
        let err = make_certs("test", &["ok".into(), "Bad".into()], other.path()).unwrap_err();
        assert!(err.to_string().contains("\"Bad\""), "{err}");
        let err = make_certs("test", &["a".into(), "a".into()], other.path()).unwrap_err();
        assert!(matches!(err, CertError::DuplicateNode(_)), "{err}");
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
    }

    #[test]
    fn issue_signs_with_the_existing_ca_and_refuses_another_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["north".to_string(), "east".to_string()];
        make_certs("test", &names, dir.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        issue(dir.path(), "test", &["north".into()], out.path()).unwrap();
        let mut paths = crate::mesh::tls::TlsPaths::in_dir(dir.path(), "north");
        paths.cert = out.path().join("north.pem");
        paths.key = out.path().join("north.key");
        // Accepted as north by the cluster's trust, and a new certificate.
        crate::mesh::tls::PeerTls::load(&paths, &names, 0).unwrap();
        let old = std::fs::read(dir.path().join("north.pem")).unwrap();
        assert_ne!(std::fs::read(&paths.cert).unwrap(), old);
        // Never overwrites; another cluster's name does not chain.
        assert!(matches!(
            issue(dir.path(), "test", &["north".into()], out.path()),
            Err(CertError::Exists(_))
        ));
        let err = issue(dir.path(), "other", &["east".into()], out.path()).unwrap_err();
        assert!(matches!(err, CertError::NotOurCa(_)), "{err}");
        assert!(!out.path().join("east.pem").exists());
    }

    /// A node certificate its peers would refuse as a server (no
    /// serverAuth usage) is refused at start, not by every peer later.
    #[test]
    fn a_node_certificate_without_server_usage_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["north".to_string(), "east".to_string()];
        make_certs("test", &names, dir.path()).unwrap();
        let ca_key =
            KeyPair::from_pem(&std::fs::read_to_string(dir.path().join("ca.key")).unwrap())
                .unwrap();
        let ca = ca_params("test", OffsetDateTime::now_utc())
            .self_signed(&ca_key)
            .unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["north".to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("north.pem"), cert.pem()).unwrap();
        std::fs::write(out.path().join("north.key"), key.serialize_pem()).unwrap();
        let mut paths = crate::mesh::tls::TlsPaths::in_dir(dir.path(), "north");
        paths.cert = out.path().join("north.pem");
        paths.key = out.path().join("north.key");
        let err = crate::mesh::tls::PeerTls::load(&paths, &names, 0)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("as a server certificate"), "{err}");
    }
}
