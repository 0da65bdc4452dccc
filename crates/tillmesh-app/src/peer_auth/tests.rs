//! Unit tests of the peer authenticator.
