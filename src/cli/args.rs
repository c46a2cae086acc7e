//! The command-line grammar: every subcommand and flag, each with its help
//! text (a unit test walks the tree to keep it so). Parsing only; what a
//! command does is in [`super::admin`] and [`super::local`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "kmsd",
    version,
    about = "Key-management daemon: a JWT signing authority",
    long_about = "Key-management daemon: a JWT signing authority.\n\nThe admin commands (keys, api-keys, migration, \
                  audit) talk to a running daemon's admin listener: its URL comes from --admin-url or KMSD_ADMIN_URL, \
                  the API key from KMSD_ADMIN_API_KEY."
)]
pub struct Cli {
    /// Config file (TOML). Without one, built-in defaults apply; KMSD_* variables override either.
    #[arg(long, short, global = true, env = "KMSD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon (initializes the data dir on first start).
    Serve,
    /// Create the data dir, vault, first keys and the bootstrap admin API key
    /// (all or nothing: a failure leaves no file behind).
    Init {
        /// Make a new, empty store although the KEK file exists (its store was
        /// deleted or moved); the new store is wrapped under that KEK.
        #[arg(long)]
        force_new_store: bool,
    },
    /// Validate the configuration and report every problem.
    CheckConfig,
    /// Vault maintenance (offline: the daemon must be stopped).
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Manage API keys through the admin listener.
    #[command(subcommand)]
    ApiKeys(ApiKeysCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Signing keys: list, rotate, emergency revoke, rollback, pause/resume rotation (admin API).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The HS256 cut-over: status, advance, rollback, sunset (admin API).
    #[command(subcommand)]
    Migration(MigrationCommand),
    /// Save a consistent copy of the running daemon's store (admin API,
    /// `relayauth:admin:manage:*`); it opens without repair. The KEK is not in it.
    Backup {
        /// Where to write the copy (created 0600; must not exist).
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Put a backup back as the store (kmsd stopped). It must unlock with the
    /// configured KEK and pass the record-MAC and audit-chain checks first.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing store (kept beside it as kmsd.redb.pre-restore-<time>).
        #[arg(long)]
        force: bool,
    },
    /// Move a stopped store between redb and PostgreSQL (offline).
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Print the rotation timeline the configuration implies, from now (offline).
    Plan {
        /// How many rotations to show per keyset.
        #[arg(long, default_value_t = 3)]
        rotations: usize,
    },
    /// Print a shell completion script, e.g. `kmsd completions bash > /etc/bash_completion.d/kmsd`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// Shells `kmsd completions` writes for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Every key version with its state and planned instants.
    List(AdminArgs),
    /// Publish a new key now; it signs after the publish lead (or at once with --immediate).
    Rotate {
        /// The keyset to rotate.
        #[arg(long, default_value = "access")]
        keyset: String,
        /// Sign with the new key at once, before verifiers may have fetched it.
        #[arg(long)]
        immediate: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Emergency: out of JWKS now, its tokens refused, a replacement signs.
    /// Revoking an already revoked key succeeds and changes nothing.
    Revoke {
        /// The key id (kid) to revoke.
        kid: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The previous, still-published key signs again.
    Rollback {
        /// The keyset to roll back.
        #[arg(long, default_value = "access")]
        keyset: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Freeze scheduled rotation.
    Pause(AdminArgs),
    /// Unfreeze scheduled rotation.
    Resume(AdminArgs),
    /// The next scheduled events, from the running daemon.
    Plan(AdminArgs),
}

#[derive(Subcommand, Debug)]
pub enum MigrationCommand {
    /// Where the HS256 cut-over stands.
    Status(AdminArgs),
    /// hs256 -> asymmetric (once the asymmetric key has been published for the publish lead).
    Advance(AdminArgs),
    /// asymmetric -> hs256, until sunset.
    Rollback(AdminArgs),
    /// Sunset now (compromised secret): HS256 refused everywhere from now on.
    Sunset(AdminArgs),
}

#[derive(Subcommand, Debug)]
pub enum ApiKeysCommand {
    /// Create a key; prints it once.
    Create {
        /// A name for the key, shown in lists.
        #[arg(long)]
        name: String,
        /// A scope to grant (repeat for several). Must be covered by the calling key's scopes.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Expiry, ISO-8601 UTC (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List keys (never the secrets).
    List {
        /// Keys per page.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The cursor a previous page answered, for the next page.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a key by id (idempotent).
    Revoke {
        /// The key's id (ak_...).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain of the audit log. Reads the store directly when
    /// no daemon holds it; otherwise asks the running daemon.
    Verify(AdminArgs),
}

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Copy the configured store (kmsd stopped) into an empty target: a PostgreSQL
    /// database or a new redb file. Every row is copied as stored, so the same KEK
    /// opens the copy; the source's audit chain is verified before, and the copy's
    /// records, audit chain and rows after. A failure leaves the target as it was.
    Copy(CopyTo),
}

/// Where `kmsd storage copy` writes (one of the two).
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct CopyTo {
    /// postgres://… (an empty database) or the path of a redb file that does not exist
    /// yet. A URL's password here shows in `ps`: prefer --to-env.
    #[arg(long, value_name = "URL|PATH")]
    pub to: Option<String>,
    /// The environment variable holding the target's PostgreSQL URL
    /// (e.g. KMSD_STORAGE_URL, as the replicas will read it).
    #[arg(long, value_name = "VAR")]
    pub to_env: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// Re-wrap the vault data key under a new key-encryption key, atomically.
    /// The daemon must be stopped. Afterwards, point the config at the new KEK.
    Rekey {
        /// The new KEK: `file:PATH` (created 0600 if missing), `env:VAR`, `passphrase:VAR`
        /// or `aws-kms:KEY` (a KMS key id, ARN or alias; `[aws_kms]` settings apply).
        #[arg(long)]
        to: String,
    },
}

/// How to reach the admin listener, and how to print its answer.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Admin listener URL, http:// or https://. Default: <listen.admin> from the config,
    /// https:// when the config gives the admin listener a certificate.
    #[arg(long, env = "KMSD_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// PEM CA certificate(s) that issued the admin listener's certificate. Default: the system's roots.
    #[arg(long, env = "KMSD_ADMIN_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for an admin listener that requires one (mTLS).
    #[arg(long, env = "KMSD_ADMIN_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "KMSD_ADMIN_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Output format. Default: table on a terminal, json otherwise.
    #[arg(long, value_enum)]
    pub output: Option<Output>,
}

/// How a command prints the admin API's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON, pretty-printed, for scripts.
    Json,
}
