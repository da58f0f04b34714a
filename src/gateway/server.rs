//! The client port's HTTP server.
//!
//! actix-web's `HttpServer` hands each connection to the HTTP parser as
//! it is; the client port needs to see the raw request targets first (a
//! fragment, which the parser drops in silence, must be refused:
//! `crate::http::fragment`). So the port is served by the same parts
//! `HttpServer` is made of (actix-server's accept loop, actix-tls's
//! rustls acceptor, actix-http's HTTP/1.1 service and the actix-web app
//! of `gateway::configure`), with each connection wrapped in a
//! [`FragmentGuard`] between the socket (or TLS) and the parser.

use super::Gateway;
use crate::http::fragment::FragmentGuard;
use actix_http::HttpService;
use actix_http::h1::H1Service;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_tls::accept::TlsError;
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_web::App;
use actix_web::dev::AppConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a client has to send a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client has to close a connection ordo is closing (after a
/// 408 or 413, say), as actix-web's `HttpServer` gives: without it the
/// socket is dropped at once, and a client still sending its body may get
/// a reset instead of the answer.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The client port's server on `listener`, over TLS with `tls` if given;
/// it runs once spawned (or awaited).
pub fn client_server(
    gw: Arc<Gateway>,
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    workers: usize,
    handle_signals: bool,
) -> std::io::Result<actix_server::Server> {
    let addr = listener.local_addr()?;
    let mut builder = actix_server::Server::build()
        .workers(workers.max(1))
        .shutdown_timeout(5);
    if !handle_signals {
        builder = builder.disable_signals();
    }
    let builder = match tls {
        None => builder.listen("ordo-client", listener, move || {
            fn_service(|io: TcpStream| {
                let peer = io.peer_addr().ok();
                std::future::ready(Ok((FragmentGuard::new(io), peer)))
            })
            .and_then(h1(gw.clone(), addr))
        })?,
        Some(tls) => {
            let mut config = (*tls).clone();
            if config.alpn_protocols.is_empty() {
                config.alpn_protocols.push(b"http/1.1".to_vec());
            }
            builder.listen("ordo-client-tls", listener, move || {
                Acceptor::new(config.clone())
                    .map_err(TlsError::into_service_error)
                    .map(|io: TlsStream<TcpStream>| {
                        let peer = io.get_ref().0.peer_addr().ok();
                        (FragmentGuard::new(io), peer)
                    })
                    .and_then(h1(gw.clone(), addr).map_err(TlsError::Service))
            })?
        }
    };
    Ok(builder.run())
}

/// The gateway's app as an HTTP/1.1 service over connections of type `T`.
fn h1<T>(
    gw: Arc<Gateway>,
    addr: SocketAddr,
) -> H1Service<
    T,
    impl actix_service::ServiceFactory<
        actix_http::Request,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::HttpResponse,
        InitError = (),
    > + use<T>,
    actix_web::body::BoxBody,
>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let app = App::new()
        .configure(super::configure(gw))
        .into_factory()
        .map_err(|e: actix_web::Error| e.error_response());
    HttpService::build()
        .client_request_timeout(HEAD_TIMEOUT)
        .client_disconnect_timeout(DISCONNECT_TIMEOUT)
        .local_addr(addr)
        .h1(map_config(app, |_| AppConfig::default()))
}
