//! Peer transport over HTTP: the client side of the `/peer/v1/…` protocol
//! (see docs/PROTOCOL.md), implementing [`tillmesh_domain::ports::PeerTransport`].
//!
//! Architecture invariant: depends on the domain and reqwest only; never on another
//! adapter or on the app crate.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use tillmesh_domain::ports::{PeerTransport, TransportError};
use tillmesh_domain::wire::{HelloV1, PullRequestV1, PullResponseV1, PROTOCOL_VERSION};

/// Longest a hello (health/identity check) may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one pull may take, a full batch included.
const PULL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest pull response accepted, in bytes; a peer sending more is cut off.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// HTTP client for the peer protocol.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    store_id: String,
}

impl HttpTransport {
    /// A client that identifies itself as a member of `store_id`.
    ///
    /// # Errors
    /// [`TransportError::Protocol`] if the HTTP client cannot be built.
    pub fn new(store_id: impl Into<String>) -> Result<Self, TransportError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        Ok(Self {
            client,
            store_id: store_id.into(),
        })
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
    ) -> Result<T, TransportError> {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(TransportError::Unauthorized(body_text(resp).await));
        }
        if !status.is_success() {
            let text = body_text(resp).await;
            return Err(if status == StatusCode::NOT_FOUND {
                TransportError::Protocol(format!("not a tillmesh terminal ({status})"))
            } else {
                TransportError::Remote(format!("{status}: {text}"))
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(TransportError::Protocol("response too large".into()));
        }
        let bytes = resp.bytes().await.map_err(classify)?;
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(TransportError::Protocol("response too large".into()));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| TransportError::Protocol(format!("undecodable answer: {e}")))
    }
}

async fn body_text(resp: reqwest::Response) -> String {
    resp.text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

fn classify(e: reqwest::Error) -> TransportError {
    if e.is_timeout() || e.is_connect() || e.is_request() {
        TransportError::Unreachable(e.to_string())
    } else if e.is_decode() || e.is_body() {
        TransportError::Protocol(e.to_string())
    } else {
        TransportError::Unreachable(e.to_string())
    }
}

fn url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

#[async_trait]
impl PeerTransport for HttpTransport {
    async fn hello(&self, base: &str) -> Result<HelloV1, TransportError> {
        let resp = self
            .client
            .get(url(base, "/peer/v1/hello"))
            .header("x-tillmesh-store", &self.store_id)
            .timeout(HELLO_TIMEOUT)
            .send()
            .await
            .map_err(classify)?;
        let hello: HelloV1 = Self::read_json(resp).await?;
        if hello.service != "tillmesh" {
            return Err(TransportError::Protocol(
                "the address answers but is not a tillmesh terminal".into(),
            ));
        }
        if hello.protocol != PROTOCOL_VERSION {
            return Err(TransportError::Protocol(format!(
                "peer speaks protocol {}, this terminal {PROTOCOL_VERSION}",
                hello.protocol
            )));
        }
        Ok(hello)
    }

    async fn pull(
        &self,
        base: &str,
        req: &PullRequestV1,
    ) -> Result<PullResponseV1, TransportError> {
        let resp = self
            .client
            .post(url(base, "/peer/v1/pull"))
            .header("x-tillmesh-store", &self.store_id)
            .timeout(PULL_TIMEOUT)
            .json(req)
            .send()
            .await
            .map_err(classify)?;
        Self::read_json(resp).await
    }
}
