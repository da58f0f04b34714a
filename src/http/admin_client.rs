//! The client side of the admin API, for `ordo admin`: one request to a
//! running node, with a timeout, and its answer as text.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The longest `ordo admin` waits for a node.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read, a reseed export included.
const ANSWER_BYTES_MAX: usize = crate::gateway::admin::RESEED_BYTES_MAX;

/// How `ordo admin` reaches a node: its admin token, and for an
/// `https://` node the CA to trust (default: the system's roots) and a
/// client certificate, if the node asks for one.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub token: Option<String>,
    pub tls: crate::tls::backend::BackendTlsFiles,
}

/// Send `method url`; the status and the body of the answer, as text.
pub fn call(method: &str, url: &str, access: &Access) -> Result<(u16, String)> {
    let (status, body) = call_bytes(method, url, access, Bytes::new())?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Send `method url` with `body`; the status and the body of the answer.
pub fn call_bytes(method: &str, url: &str, access: &Access, body: Bytes) -> Result<(u16, Bytes)> {
    let token = access.token.as_deref();
    let tls = if url.starts_with("https://") {
        crate::tls::backend::client_config(&access.tls).context("TLS to the node")?
    } else {
        // Never used: the URL is http.
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .context("TLS defaults")?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    rt.block_on(async {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnector::from((http, tls));
        let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
        let mut req = http::Request::builder()
            .method(method)
            .uri(url)
            .header("user-agent", "ordo-admin");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(body))
            .with_context(|| format!("{url:?} is not a URL ordo can call"))?;
        let resp = tokio::time::timeout(TIMEOUT, client.request(req))
            .await
            .with_context(|| format!("no answer from {url} within {TIMEOUT:?}"))?
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(
            TIMEOUT,
            Limited::new(resp.into_body(), ANSWER_BYTES_MAX).collect(),
        )
        .await
        .with_context(|| format!("the answer from {url} did not finish within {TIMEOUT:?}"))?
        .map_err(|e| anyhow::anyhow!("cannot read the answer from {url}: {e}"))?
        .to_bytes();
        Ok((status, body))
    })
}
