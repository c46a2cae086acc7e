//! A first start made all or nothing: the store and the KEK file are built
//! under staging names and put in place only once init has succeeded. The
//! redb file `kmsd storage copy` makes is staged the same way ([`Staged`]).

use std::path::PathBuf;

use super::AppError;
use crate::config::Config;
use crate::vault::KekSource;

/// The staging names of a first start's files: `<name>.init`.
const INIT_SUFFIX: &str = ".init";

/// A first start's files under their staging names (`<name>.init`, beside
/// the final ones): the store and, when `init` makes the KEK file, that file.
///
/// Chosen over a resumable init: a half-made store holds a bootstrap key
/// whose secret was never shown, and resuming would have to replace it; a
/// staged store that never becomes live needs no such care. Putting in place
/// links each staged file to its final name (which fails if that name was
/// taken meanwhile, so a concurrent init never overwrites a live store) and
/// unlinks the staged one: the KEK file first, the store last. The store's
/// link is the commit point: before it the data dir is not initialized, and
/// a later init removes the staged files an interrupted one left (they never
/// become live under those names). A failure removes what this attempt made,
/// and the data dir if this attempt created it and it is empty. KMS keys a
/// failed attempt created are tagged, and a later start's orphan search
/// schedules their deletion.
pub(super) struct Staging {
    store: Staged,
    /// The KEK file, when this init creates it.
    kek: Option<Staged>,
    /// The data dir, when this init created it.
    made_dir: Option<PathBuf>,
}

/// One file made under a staging name (`<live><suffix>`) by the command
/// `by`, and put in place under its live name only once it is complete.
pub(super) struct Staged {
    pub(super) staged: PathBuf,
    live: PathBuf,
    by: &'static str,
}

impl Staged {
    pub(super) fn new(live: PathBuf, suffix: &str, by: &'static str) -> Self {
        let mut staged = live.clone().into_os_string();
        staged.push(suffix);
        Self { staged: staged.into(), live, by }
    }

    /// Removes the staged file if there is one; `left` says it was left by an
    /// earlier attempt.
    pub(super) fn remove(&self, left: bool) -> Result<(), std::io::Error> {
        match std::fs::remove_file(&self.staged) {
            Ok(()) if left => {
                tracing::warn!(path = %self.staged.display(), "removed what an interrupted `{}` left", self.by);
                Ok(())
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Links the staged file to its live name: an error means it is not live.
    /// Once it is, unlinking the staged name and syncing the directory are
    /// best effort (a failure is logged, the file is live either way).
    pub(super) fn put_in_place(&self) -> Result<(), AppError> {
        std::fs::hard_link(&self.staged, &self.live)
            .map_err(|source| AppError::DataDir { path: self.live.clone(), source })?;
        let dir = self.live.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let settled = std::fs::remove_file(&self.staged).and_then(|()| std::fs::File::open(dir)?.sync_all());
        if let Err(e) = settled {
            tracing::warn!(path = %self.live.display(), error = %e, "could not settle a file made by `{}`", self.by);
        }
        Ok(())
    }
}

impl Staging {
    /// Creates the data dir (0700) if needed and removes what an earlier,
    /// interrupted init left.
    pub(super) fn begin(config: &Config) -> Result<Self, AppError> {
        let made_dir = (!config.data_dir.exists()).then(|| config.data_dir.clone());
        create_private_dir(&config.data_dir)?;
        let kek = match &config.kek {
            KekSource::File(path) => {
                let staged = Staged::new(path.clone(), INIT_SUFFIX, "kmsd init");
                staged.remove(true).map_err(|source| AppError::DataDir { path: staged.staged.clone(), source })?;
                (!path.exists()).then_some(staged)
            }
            _ => None,
        };
        let store = Staged::new(config.store_path(), INIT_SUFFIX, "kmsd init");
        store.remove(true).map_err(|source| AppError::DataDir { path: store.staged.clone(), source })?;
        Ok(Self { store, kek, made_dir })
    }

    /// Where init builds the store.
    pub(super) fn store_path(&self) -> &std::path::Path {
        &self.store.staged
    }

    /// The KEK to initialize with: the staged file if init makes the file.
    pub(super) fn kek_source(&self, configured: &KekSource) -> KekSource {
        match &self.kek {
            Some(kek) => KekSource::File(kek.staged.clone()),
            None => configured.clone(),
        }
    }

    /// Puts the KEK file (if made here) and then the store in place; if the
    /// store cannot be, the KEK file is taken back.
    pub(super) fn commit(&self) -> Result<(), AppError> {
        if let Some(kek) = &self.kek {
            kek.put_in_place()?;
        }
        let done = self.store.put_in_place();
        if let (Err(_), Some(kek)) = (&done, &self.kek) {
            let _ = std::fs::remove_file(&kek.live);
        }
        done
    }

    /// Best effort: removes the staged files, and the data dir if this
    /// attempt made it (and it is empty).
    pub(super) fn discard(&self) {
        for staged in [Some(&self.store), self.kek.as_ref()].into_iter().flatten() {
            if let Err(e) = staged.remove(false) {
                tracing::warn!(path = %staged.staged.display(), error = %e, "could not remove a staged file");
            }
        }
        if let Some(dir) = &self.made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn create_private_dir(path: &std::path::Path) -> Result<(), AppError> {
    let err = |source| AppError::DataDir { path: path.to_owned(), source };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// Refuses a data dir or store that group or others can access (like the KEK
/// file, see `vault`): kmsd makes them 0700 and 0600, and the shipped systemd
/// unit says `StateDirectoryMode=0700`, so only a hand-made change (or a
/// restore with plain `cp`) is refused, with the command that fixes it.
pub(super) fn check_private(path: &std::path::Path, what: &'static str, fix: u32) -> Result<(), AppError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| AppError::DataDir { path: path.to_owned(), source })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AppError::Permissions { what, path: path.to_owned(), mode, fix });
        }
    }
    Ok(())
}
