//! Black-box tests: the real `kmsd` binary on 127.0.0.1 with a temp data dir,
//! real redb files, real HTTP, and independent verifiers (PyJWT). Tests whose
//! behaviour does not need a process of its own run the same composition root
//! in process on a manual clock (`support::TestApp`); helpers every module
//! shares are in `support`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod daemon;
mod fleet;
mod node;
mod pki;
mod postgres;
mod python;
mod support;

mod api_keys;
mod backend_contract;
mod backup;
mod cli;
mod conformance;
mod connections;
mod container;
mod corrupt_store;
mod discovery;
mod first_start;
mod forgery;
mod full_disk;
mod http_surface;
mod hygiene;
mod integrity;
mod introspection;
mod jwks;
mod kms;
mod lasting_changes;
mod migration;
mod observe;
mod oidc;
mod openapi;
mod packaging;
mod revocation;
mod rotation;
mod storage_copy;
mod tls;
mod tokens;
mod vault;
