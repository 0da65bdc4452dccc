//! Peer transport port: how one terminal talks to another.

use thiserror::Error;

use crate::ids::DeviceId;
use crate::wire::{HelloV1, PullRequestV1, PullResponseV1};

/// Why a peer request failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Could not connect or timed out: the peer is probably down.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The peer refused us (not a member of the same store, or bad credentials).
    #[error("peer refused authentication: {0}")]
    Unauthorized(String),
    /// The peer answered something that is not the tillmesh protocol.
    #[error("peer answered outside the protocol: {0}")]
    Protocol(String),
    /// The peer reported an error.
    #[error("peer error: {0}")]
    Remote(String),
}

/// Sends peer-protocol requests to the terminal at `base` (e.g. `http://10.0.0.2:7700`).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait PeerTransport: Send + Sync + 'static {
    /// Asks who the peer is.
    ///
    /// # Errors
    /// See [`TransportError`].
    async fn hello(&self, base: &str) -> Result<HelloV1, TransportError>;

    /// Pulls one batch of changes.
    ///
    /// # Errors
    /// See [`TransportError`].
    async fn pull(&self, base: &str, req: &PullRequestV1) -> Result<PullResponseV1, TransportError>;

    /// Proves, both ways, that this terminal and the peer hold the same store key
    /// (an authenticated handshake; `hello` alone proves nothing). Returns the
    /// peer's device id as authenticated by the handshake.
    ///
    /// # Errors
    /// [`TransportError::Unauthorized`] when the peer is not a member of this store.
    async fn verify_membership(&self, base: &str) -> Result<DeviceId, TransportError>;
}
