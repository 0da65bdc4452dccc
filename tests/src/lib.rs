//! Test support for workspace-level tests: [`TerminalProcess`] starts the real
//! `terminal-server` binary on loopback with its own temp data dir and talks to it over
//! HTTP; [`cluster`] runs many terminals in one process for the harness.
//!
//! Set `TEST_LOG=1` to see the terminals' logs.

pub mod clock;
pub mod cluster;
pub mod netns;
pub mod process;

pub use process::{binary_path, TerminalProcess};

/// Admin token given to every test terminal.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// Store key shared by test terminals of one store.
pub const STORE_KEY: &str = "test-store-key-0123456789abcdef";
