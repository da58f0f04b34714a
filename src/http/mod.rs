//! HTTP on the backend side: the update payload and stored response
//! encodings (`request`) and the production [`Backend`](crate::node::Backend)
//! that sends updates to a service over HTTP (`client`), and the admin
//! API's client for `ordo admin` (`admin_client`).

pub mod admin_client;
pub mod client;
pub mod deadlines;
pub mod fragment;
pub mod framing;
pub mod pipeline;
pub mod reads;
pub mod request;

pub use client::{HttpBackend, HttpBackendConfig, HttpBackendError};
pub use request::{ProxiedRequest, StoredResponse, strip_hop_by_hop};

/// A listening socket for an HTTP server whose connections send without
/// Nagle's delay. actix-web leaves Nagle on; an answer written as headers
/// then body (every streamed read) then waits for the client's delayed
/// ACK, 40 ms on Linux, which was the plain GET's p99. Accepted sockets
/// inherit `TCP_NODELAY` from their listener on Linux.
pub fn listen(addr: impl std::net::ToSocketAddrs) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    /// Without it, a streamed answer waits for the client's delayed ACK.
    #[test]
    fn connections_to_a_listener_send_without_nagle() {
        let l = super::listen("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let (served, _) = l.accept().expect("accept");
        assert!(served.nodelay().expect("getsockopt"), "Nagle is on");
    }
}
