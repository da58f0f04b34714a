//! Pins: a peer trusted by the SHA-256 digest of its certificate (`cert-sha256:`)
//! or of its public key (`key-sha256:`, the DER SubjectPublicKeyInfo, which
//! survives a certificate renewed with the same key), instead of by a CA.
//!
//! The text form is the kind, a colon and 64 hex digits; colons between
//! the digits are allowed, so `openssl x509 -fingerprint -sha256` output
//! can be pasted. `ordo fingerprint FILE` prints both pins of a
//! certificate.

use rustls::pki_types::CertificateDer;
use std::fmt;
use std::str::FromStr;

/// What a pin's digest covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PinKind {
    /// The whole certificate (DER).
    Cert,
    /// The certificate's public key (DER SubjectPublicKeyInfo).
    Key,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pin {
    pub kind: PinKind,
    pub sha256: [u8; 32],
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Pin {
    /// Both pins of a certificate: of the certificate, and of its key
    /// (`None` if the certificate does not parse).
    pub fn of(cert: &CertificateDer<'_>) -> (Pin, Option<Pin>) {
        let whole = Pin {
            kind: PinKind::Cert,
            sha256: sha256(cert.as_ref()),
        };
        let key = webpki::EndEntityCert::try_from(cert).ok().map(|ee| Pin {
            kind: PinKind::Key,
            sha256: sha256(ee.subject_public_key_info().as_ref()),
        });
        (whole, key)
    }

    /// Whether `cert` is the pinned certificate, or carries the pinned key.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        let (whole, key) = Pin::of(cert);
        match self.kind {
            PinKind::Cert => whole == *self,
            PinKind::Key => key == Some(*self),
        }
    }
}

/// Whether `cert` matches any of `pins`.
pub fn any_matches(pins: &[Pin], cert: &CertificateDer<'_>) -> bool {
    let (whole, key) = Pin::of(cert);
    pins.iter().any(|p| *p == whole || Some(*p) == key)
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            PinKind::Cert => "cert-sha256:",
            PinKind::Key => "key-sha256:",
        })?;
        for b in self.sha256 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Pin {
    type Err = String;

    fn from_str(s: &str) -> Result<Pin, String> {
        let (kind, hex) = if let Some(h) = s.strip_prefix("cert-sha256:") {
            (PinKind::Cert, h)
        } else if let Some(h) = s.strip_prefix("key-sha256:") {
            (PinKind::Key, h)
        } else {
            return Err(format!(
                "{s:?} is not a pin: write cert-sha256:<64 hex digits> or key-sha256:<64 hex digits> \
                 (`ordo fingerprint CERT.pem` prints both)"
            ));
        };
        let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "{s:?}: a SHA-256 pin has 64 hex digits (colons between them allowed)"
            ));
        }
        let mut sha256 = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            sha256[i] = u8::from_str_radix(text, 16).map_err(|e| e.to_string())?;
        }
        Ok(Pin { kind, sha256 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dir: &std::path::Path, name: &str) -> CertificateDer<'static> {
        crate::tls::load_certs(&dir.join(format!("{name}.pem")))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn pins_match_their_certificate_only_and_round_trip_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["north".to_string(), "east".to_string()];
        crate::mesh::certs::make_certs("t", &names, dir.path()).unwrap();
        let (north, east) = (cert(dir.path(), "north"), cert(dir.path(), "east"));
        let (whole, key) = Pin::of(&north);
        let key = key.unwrap();
        for p in [whole, key] {
            assert!(p.matches(&north) && !p.matches(&east), "{p}");
            assert_eq!(p.to_string().parse::<Pin>().unwrap(), p);
            assert!(any_matches(&[p], &north) && !any_matches(&[p], &east));
        }
        assert_ne!(whole.sha256, key.sha256);
        // openssl's way of printing a fingerprint, upper case with colons.
        let hex: Vec<String> = whole.sha256.iter().map(|b| format!("{b:02X}")).collect();
        let pasted: Pin = format!("cert-sha256:{}", hex.join(":")).parse().unwrap();
        assert_eq!(pasted, whole);
        for bad in [
            "sha256:00",
            "cert-sha256:abc",
            &format!("key-sha256:{}", "g".repeat(64)),
        ] {
            let err = bad.parse::<Pin>().unwrap_err();
            assert!(err.contains(bad) || err.contains("64 hex"), "{err}");
        }
    }
}
