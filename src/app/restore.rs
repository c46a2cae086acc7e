//! `kmsd restore --from FILE`: puts an online backup (see
//! [`crate::http::backup`]) back as the store, offline. Nothing is replaced
//! until the backup has proved itself: its data key unwraps under the
//! configured KEK, every record MAC verifies and the audit chain is intact.
//! An existing store is replaced only with `force`, and is kept beside the
//! new one (`kmsd.redb.pre-restore-<unix seconds>`), never deleted.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::config::Config;

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub audit_entries: u64,
    /// Where the store that was replaced now is, if there was one.
    pub previous: Option<PathBuf>,
}

pub async fn restore(config: &Config, from: &Path, force: bool, now_unix: i64) -> anyhow::Result<Restored> {
    let data_key = crate::vault::unlock(from, &config.kek)
        .await
        .with_context(|| format!("backup {} cannot be unlocked with the configured KEK", from.display()))?;
    let audit_entries = crate::storage::verify_backup(from, &data_key.record_key())
        .with_context(|| format!("backup {} does not verify", from.display()))?;
    let target = config.store_path();
    let previous = if target.exists() {
        if !force {
            bail!("{} exists; `kmsd restore --force` replaces it (the old store is kept beside it)", target.display());
        }
        refuse_if_open(&target)?;
        Some(target.with_file_name(format!("{}.pre-restore-{now_unix}", crate::storage::STORE_FILE)))
    } else {
        None
    };
    let staged = config.data_dir.join(format!(".restore-{}.redb", crate::encoding::random_hex(8)));
    copy_synced(from, &staged).with_context(|| format!("cannot copy the backup into {}", config.data_dir.display()))?;
    if let Some(previous) = &previous {
        std::fs::rename(&target, previous).with_context(|| format!("cannot move {} aside", target.display()))?;
    }
    std::fs::rename(&staged, &target).with_context(|| format!("cannot install {}", target.display()))?;
    std::fs::File::open(&config.data_dir).and_then(|d| d.sync_all()).context("cannot sync the data dir")?;
    Ok(Restored { audit_entries, previous })
}

/// A store a running kmsd holds is locked: refuse rather than swap it away
/// under the daemon.
fn refuse_if_open(store: &Path) -> anyhow::Result<()> {
    if crate::storage::Store::in_use(store) {
        bail!("{} is open in a running kmsd; stop it before restoring", store.display())
    }
    Ok(())
}

fn copy_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to)?;
    let copied = std::io::copy(&mut src, &mut dst).and_then(|_| dst.sync_all());
    if copied.is_err() {
        let _ = std::fs::remove_file(to);
    }
    copied
}
