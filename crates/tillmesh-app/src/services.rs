//! Application services: each owns one capability and talks to adapters only through
//! the domain's ports.

pub mod entities;
pub mod network;
pub mod queue;
pub mod sync;
