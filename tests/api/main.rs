//! Black-box tests: the real `kmsd` binary on 127.0.0.1 with a temp data dir,
//! real redb files, real HTTP, and independent verifiers (PyJWT).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod daemon;
mod fleet;
mod node;
mod postgres;
mod python;

mod api_keys;
mod backend_contract;
mod cli;
mod conformance;
mod connections;
mod discovery;
mod first_start;
mod forgery;
mod http_surface;
mod hygiene;
mod integrity;
mod introspection;
mod jwks;
mod kms;
mod lasting_changes;
mod migration;
mod revocation;
mod rotation;
mod tokens;
mod vault;
