//! The tillmesh application: the services (entities, network registry, sync, offline
//! queue), the axum HTTP API (management `/api/*`, peer `/peer/v1/*`, dashboard `/`),
//! and the wiring of adapters into a running terminal.
//!
//! Architecture invariant: this is the only crate that depends on adapters; the
//! domain rules live in `tillmesh-domain`, and `apps/terminal-server` only calls
//! [`run`]. The system clock and jitter source are small adapters kept here
//! (`system.rs`).

pub mod cli;
pub mod config;
pub mod events;
pub mod http;
pub mod identity;
pub mod peer_auth;
pub mod secrets;
pub mod services;
pub mod system;
pub mod terminal;
pub mod timefmt;

pub use cli::main_entry;
pub use config::{Config, DiscoveryMode};
pub use terminal::{run, StartHooks, Terminal};
