//! HTTP on the backend side: the update payload and stored response
//! encodings (`request`) and the production [`Backend`](crate::node::Backend)
//! that sends updates to a service over HTTP (`client`), and the admin
//! API's client for `ordo admin` (`admin_client`).

pub mod admin_client;
pub mod client;
pub mod request;

pub use client::{HttpBackend, HttpBackendConfig, HttpBackendError};
pub use request::{ProxiedRequest, StoredResponse, strip_hop_by_hop};
