//! TLS on every hop, with one crypto provider (`ring`: it builds with a
//! C compiler alone) and one way to read PEM files and report what is
//! wrong with them.
//!
//! - [`files`]: certificates, keys and CA bundles from PEM files;
//! - [`pins`]: SHA-256 pins of a certificate or of its public key;
//! - [`client_port`]: the client port's server side, reloadable;
//! - [`backend`]: the client side of `https://` backends.
//!
//! The mesh's own (mutual, TLS 1.3 only) settings are in `mesh::tls`.

pub mod backend;
pub mod client_port;
pub mod files;
pub mod pins;

pub use files::{TlsError, load_certs, load_key};

use rustls::crypto::CryptoProvider;
use std::sync::Arc;

/// The crypto provider of every TLS configuration ordo makes.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
