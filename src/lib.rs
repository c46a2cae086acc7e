//! kmsd: a key-management daemon that is a platform's JWT signing authority.
//!
//! The map (dependencies point inward, toward `keys` and `clock`):
//! - [`clock`]: injected time ([`clock::Clock`], [`clock::Timestamp`], and
//!   [`clock::ManualClock`] for tests that move time by hand).
//! - [`encoding`]: base64url (JOSE), lower-case hex and SHA-256 helpers.
//! - [`ids`]: the shape of text identifiers (identity, org, session, token ids) and of the ids kmsd makes.
//! - [`config`]: what the files say vs. what the program trusts; built-in defaults.
//! - [`keys`]: key ids, keysets, key specs, public keys, key-version lifecycle.
//! - [`backend`]: the [`backend::KeyBackend`] capability and the guard around it.
//! - [`vault`]: the local vault backend: sealing, KEK sources, key material.
//! - [`kms`]: the AWS KMS backend: keys created and used in KMS, sign budget, orphans;
//!   and a KMS key as the vault's KEK (envelope).
//! - [`storage`]: the store on either engine (redb, or PostgreSQL for HA);
//!   every table and record encoding; record MACs.
//! - [`keyring`]: which key signs and which are published, in memory.
//! - [`jwks`]: the published key set as a ready-to-serve snapshot.
//! - [`rotation`]: the reconcile loop (pure `plan`), revoke, rollback, pause.
//! - [`migration`]: the HS256 cut-over state machine and its sunset timer.
//! - [`identities`]: who tokens are issued to; suspend, retire, reactivate.
//! - [`tokens`]: issue, refresh, revoke and verify relayauth tokens.
//! - [`api_keys`]: API key format, stored form, create/list/revoke, authentication.
//! - [`auth_limit`]: per-client throttling of failed authentication.
//! - [`ha`]: several replicas on one PostgreSQL: the leader's background work
//!   (fenced by its lease), and the change feed applied to every cache.
//! - [`metrics`]: the Prometheus metrics: event counters, histograms, `/proc` figures.
//! - [`telemetry`]: the log subscriber (text or JSON), its reloadable filter.
//! - [`context`]: the request being served (id, client, actor), for logs and audit.
//! - [`reload`]: SIGHUP: what changes without a restart.
//! - [`notify`]: systemd readiness notifications (`Type=notify`).
//! - [`scopes`]: scope coverage with relayauth's semantics.
//! - [`text`]: what identifiers and display fields may hold (no control characters).
//! - [`audit`]: the hash-chained audit log.
//! - [`http`]: the public and admin routers, and the one table of error codes
//!   ([`http::ErrorCode`]).
//! - [`listener`]: accept loops and connection lifetimes: timeouts, caps, drain; TLS and its reload.
//! - [`app`]: the composition root used by `main` and the tests.
//! - [`admin_client`]: the CLI's HTTP(S) client for the admin API, one typed method per operation.
//! - [`cli`]: the command line: the clap tree, each command's mapping, table/json output.
//!
//! Request path: `http -> tokens -> keyring -> backend`.
//! Background path: `rotation -> keyring -> backend + storage`.

// The PostgreSQL test harness (tests/api/postgres/harness.rs) is shared with
// the store contract suite in `storage`; it names this crate `kmsd`.
#[cfg(test)]
extern crate self as kmsd;

pub mod admin_client;
pub mod api_keys;
pub mod app;
pub mod audit;
pub mod auth_limit;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod context;
pub mod encoding;
pub mod ha;
pub mod http;
pub mod identities;
pub mod ids;
pub mod jwks;
pub mod keyring;
pub mod keys;
pub mod kms;
pub mod listener;
pub mod metrics;
pub mod migration;
pub mod notify;
pub mod reload;
pub mod rotation;
pub mod scopes;
pub mod storage;
pub mod telemetry;
pub mod text;
pub mod tokens;
pub mod vault;
