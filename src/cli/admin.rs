//! The commands that go through the admin API: each maps its arguments to
//! one typed [`AdminClient`] call and prints the answer ([`super::output`]).
//! `audit verify` reads the store itself when no daemon holds it.

use anyhow::Context;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::args::{AdminArgs, ApiKeysCommand, KeysCommand, MigrationCommand};
use super::output::{self, View};
use crate::admin_client::{AdminClient, AuditVerdict, ClientTls, MigrationAction};
use crate::config::Config;

pub const ADMIN_KEY_ENV: &str = "KMSD_ADMIN_API_KEY";

/// The client for `admin`'s URL and TLS settings, with the API key from
/// [`ADMIN_KEY_ENV`]; `needs` names the scope the command requires.
fn client(config: &Config, admin: &AdminArgs, env: &[(String, String)], needs: &str) -> anyhow::Result<AdminClient> {
    let key = env
        .iter()
        .find(|(k, _)| k == ADMIN_KEY_ENV)
        .map(|(_, v)| Zeroizing::new(v.clone()))
        .with_context(|| format!("set {ADMIN_KEY_ENV} to an API key with {needs}"))?;
    let scheme = if config.tls.admin.is_some() { "https" } else { "http" };
    let url = admin.admin_url.clone().unwrap_or_else(|| format!("{scheme}://{}", config.listen_admin));
    let tls =
        ClientTls { ca_file: admin.ca_file.clone(), identity: admin.client_cert.clone().zip(admin.client_key.clone()) };
    Ok(AdminClient::new(&url, key, &tls)?)
}

pub(super) async fn keys(cmd: KeysCommand, config: &Config, env: &[(String, String)]) -> anyhow::Result<()> {
    let c = |admin: &AdminArgs| client(config, admin, env, "relayauth:admin:manage:*");
    let (admin, reply, view) = match cmd {
        KeysCommand::List(a) => {
            let reply = c(&a)?.keys().await?;
            (a, reply, View::KEYS)
        }
        KeysCommand::Rotate { keyset, immediate, admin } => {
            let reply = c(&admin)?.rotate(&keyset, immediate).await?;
            (admin, reply, View::Object)
        }
        KeysCommand::Revoke { kid, admin } => {
            let reply = c(&admin)?.revoke_key(&kid).await?.unwrap_or_else(|| {
                json!({ "revokedKeyId": kid, "alreadyRevoked": true, "message": "the key was already revoked; nothing changed" })
            });
            (admin, reply, View::Object)
        }
        KeysCommand::Rollback { keyset, admin } => {
            let reply = c(&admin)?.rollback(&keyset).await?;
            (admin, reply, View::Object)
        }
        KeysCommand::Pause(a) => {
            let reply = c(&a)?.pause_rotation(true).await?;
            (a, reply, View::Object)
        }
        KeysCommand::Resume(a) => {
            let reply = c(&a)?.pause_rotation(false).await?;
            (a, reply, View::Object)
        }
        KeysCommand::Plan(a) => {
            let reply = c(&a)?.rotation_plan().await?;
            (a, reply, View::Object)
        }
    };
    output::print(&reply, admin.output, view)
}

pub(super) async fn api_keys(cmd: ApiKeysCommand, config: &Config, env: &[(String, String)]) -> anyhow::Result<()> {
    let c = |admin: &AdminArgs| client(config, admin, env, "relayauth:api-key:manage:*");
    let (admin, reply, view) = match cmd {
        ApiKeysCommand::Create { name, scopes, expires_at, admin } => {
            let reply = c(&admin)?.create_api_key(&name, &scopes, expires_at.as_deref()).await?;
            (admin, reply, View::Object)
        }
        ApiKeysCommand::List { limit, cursor, admin } => {
            let reply = c(&admin)?.api_keys(limit, cursor.as_deref()).await?;
            (admin, reply, View::API_KEYS)
        }
        ApiKeysCommand::Revoke { id, admin } => {
            let reply = c(&admin)?.revoke_api_key(&id).await?;
            (admin, reply, View::Object)
        }
    };
    output::print(&reply, admin.output, view)
}

pub(super) async fn migration(cmd: MigrationCommand, config: &Config, env: &[(String, String)]) -> anyhow::Result<()> {
    let (admin, action) = match cmd {
        MigrationCommand::Status(a) => (a, None),
        MigrationCommand::Advance(a) => (a, Some(MigrationAction::Advance)),
        MigrationCommand::Rollback(a) => (a, Some(MigrationAction::Rollback)),
        MigrationCommand::Sunset(a) => (a, Some(MigrationAction::Sunset)),
    };
    let reply = client(config, &admin, env, "relayauth:admin:manage:*")?.migration(action).await?;
    output::print(&reply, admin.output, View::Object)
}

/// The audit chain's hashes are keyed by the vault data key, so reading the
/// store directly needs the KEK (from the config) to unlock it. A store a
/// running daemon holds is verified by that daemon instead.
pub(super) async fn backup(
    to: &std::path::Path,
    config: &Config,
    admin: &AdminArgs,
    env: &[(String, String)],
) -> anyhow::Result<()> {
    let (bytes, rows) = client(config, admin, env, "relayauth:admin:manage:*")?.backup(to).await?;
    println!("backup written to {} ({bytes} bytes, {} rows)", to.display(), rows.as_deref().unwrap_or("?"));
    Ok(())
}

pub(super) async fn audit_verify(config: &Config, admin: &AdminArgs, env: &[(String, String)]) -> anyhow::Result<()> {
    let verdict = match verify_locally(config).await? {
        Some(verdict) => verdict,
        None => client(config, admin, env, "relayauth:admin:read:*")?.audit_verify().await?,
    };
    let reply: Value = match &verdict {
        AuditVerdict::Intact { entries } => json!({ "intact": true, "entries": entries }),
        AuditVerdict::Broken { seq, reason } => json!({ "intact": false, "brokenAt": seq, "reason": reason }),
    };
    if admin.output == Some(super::Output::Json) {
        output::print(&reply, admin.output, View::Object)?;
    }
    match verdict {
        AuditVerdict::Intact { entries } => {
            if admin.output != Some(super::Output::Json) {
                println!("audit log intact: {entries} entries verified");
            }
            Ok(())
        }
        AuditVerdict::Broken { seq: Some(seq), reason } => {
            anyhow::bail!("audit log broken: audit entry {seq}: {reason}")
        }
        AuditVerdict::Broken { seq: None, reason } => anyhow::bail!("audit log broken: {reason}"),
    }
}

/// `None` when a running daemon holds the store.
async fn verify_locally(config: &Config) -> anyhow::Result<Option<AuditVerdict>> {
    use crate::storage::Store;
    let path = config.store_path();
    let local = match crate::vault::unlock(&path, &config.kek).await {
        Ok(data_key) => Store::inspect(&path, &data_key.record_key(), |r| r.verify_audit()),
        Err(crate::vault::VaultError::Storage(e)) => Err(e),
        Err(e) => return Err(e.into()),
    };
    match local {
        Ok(Ok(entries)) => Ok(Some(AuditVerdict::Intact { entries })),
        Ok(Err(crate::audit::ChainError::Broken { seq, reason })) => {
            Ok(Some(AuditVerdict::Broken { seq: Some(seq), reason }))
        }
        Err(e) if e.is_in_use() => Ok(None),
        Err(e) => Err(e.into()),
    }
}
