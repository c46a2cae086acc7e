//! The first start: initialization is all or nothing (a failure leaves no
//! file behind and the next start prints the one bootstrap admin key), a
//! missing store beside its KEK is never silently replaced, and a store or
//! data dir open to other users is refused.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{bootstrap_key, command, keys_dir, run, sha256_file, text, Daemon};
use crate::support::call;

const BOOTSTRAP_LINE: &str = "bootstrap admin API key (shown once";

fn data(tmp: &Path) -> PathBuf {
    tmp.join("kmsd-data")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `cmd` to its exit (at most a minute, else it is killed and the test
/// fails); its stdout and stderr go to files, so nothing can block on a pipe.
fn run_to_exit(mut cmd: Command, dir: &Path) -> (ExitStatus, String) {
    let (out, err) = (dir.join("run.stdout"), dir.join("run.stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .expect("spawn kmsd");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kmsd did not exit within 60 s:\n{}{}", read(&out), read(&err));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, format!("{}{}", read(&out), read(&err)))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A deployment whose one keyset (`edge`, EdDSA) lives in AWS KMS at a
/// loopback port nothing listens on, with the region set in `[aws_kms]` (not
/// in the environment) and IMDS pointed at a closed loopback port too, so the
/// SDK's default chain, if it probes IMDS, fails at once and says so.
struct KmsDown {
    tmp: tempfile::TempDir,
    keys: PathBuf,
    config: PathBuf,
    endpoint: String,
    imds: String,
}

impl KmsDown {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let keys = keys_dir(tmp.path(), &[("edge", "EdDSA", None)]);
        std::fs::write(keys.join("edge.toml"), "name = \"edge\"\nalgorithm = \"EdDSA\"\nbackend = \"aws-kms\"\n")
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{}", closed_port());
        let imds = format!("http://127.0.0.1:{}", closed_port());
        let config = tmp.path().join("kmsd.toml");
        std::fs::write(
            &config,
            format!(
                "keys_dir = {:?}\n[aws_kms]\nregion = \"us-east-1\"\nendpoint_url = {endpoint:?}\nmax_attempts = 1\ntimeout = \"1s\"\n",
                keys.display().to_string()
            ),
        )
        .unwrap();
        KmsDown { tmp, keys, config, endpoint, imds }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `kmsd <args>` with this config, test credentials, no region in the
    /// environment, empty profile files, and IMDS on a closed loopback port.
    fn command(&self, args: &[&str]) -> Command {
        let none = self.dir().join("empty-aws-file");
        std::fs::write(&none, "").unwrap();
        let mut cmd = command(self.dir(), &[]);
        for var in [
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_KMS",
            "AWS_EC2_METADATA_DISABLED",
            "AWS_MAX_ATTEMPTS",
            "AWS_SESSION_TOKEN",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("KMSD_CONFIG", &self.config)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", &none)
            .env("AWS_SHARED_CREDENTIALS_FILE", &none)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &self.imds)
            .args(args);
        cmd
    }

    fn serve_to_exit(&self) -> (ExitStatus, String) {
        run_to_exit(self.command(&["serve"]), self.dir())
    }
}

#[tokio::test]
async fn a_first_start_that_fails_at_create_key_leaves_nothing_and_the_next_start_prints_one_bootstrap_key() {
    let kms = KmsDown::new();
    let (status, out) = kms.serve_to_exit();
    assert!(!status.success(), "serve must fail while KMS is down:\n{out}");
    assert!(!data(kms.dir()).exists(), "a failed first start leaves nothing behind:\n{out}");
    assert!(!out.contains("rak_"), "no bootstrap key is shown for a store that does not exist:\n{out}");

    // The operator switches the keyset to the vault; the next start is a first start.
    std::fs::write(kms.keys.join("edge.toml"), "name = \"edge\"\nalgorithm = \"EdDSA\"\n").unwrap();
    let d = Daemon::start_with(kms.dir(), &[], |cmd| {
        cmd.env("KMSD_CONFIG", &kms.config);
    });
    let first = d.output();
    assert_eq!(first.matches(BOOTSTRAP_LINE).count(), 1, "{first}");
    assert_eq!(first.matches("rak_").count(), 1, "{first}");
    let admin = bootstrap_key(&first);
    let (code, body) = call(&d.admin, &admin, "GET", "/v1/admin/keys", None).await;
    assert_eq!(code, 200, "the printed key is the store's admin key: {body}");
    drop(d);

    let d = Daemon::start_with(kms.dir(), &[], |cmd| {
        cmd.env("KMSD_CONFIG", &kms.config);
    });
    assert!(!d.output().contains("rak_"), "the key is shown once only:\n{}", d.output());
    let (code, _) = call(&d.admin, &admin, "GET", "/v1/admin/keys", None).await;
    assert_eq!(code, 200);
}

#[test]
fn a_kms_that_cannot_be_reached_at_first_start_is_one_readable_line_naming_endpoint_and_operation() {
    let kms = KmsDown::new();
    let (status, out) = kms.serve_to_exit();
    assert!(!status.success(), "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("kmsd: error:")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{out}");
    let line = errors[0];
    assert!(line.contains("CreateKey") && line.contains(&kms.endpoint), "names operation and endpoint: {line}");
    for dump in ["DispatchFailure {", "ConnectorError {"] {
        assert!(!out.contains(dump), "no SDK debug dump ({dump:?}):\n{out}");
    }
    let after = out.split(line).nth(1).unwrap_or_default();
    assert!(after.trim().is_empty(), "nothing follows the error line:\n{out}");
}

#[test]
fn a_region_set_in_the_config_keeps_the_sdk_from_asking_imds_for_one() {
    let kms = KmsDown::new();
    let (_, out) = kms.serve_to_exit();
    assert!(out.contains("CreateKey"), "the run got as far as KMS:\n{out}");
    assert!(!out.contains("IMDS"), "no IMDS probe when [aws_kms] region is set:\n{out}");
}

#[test]
fn leftovers_of_an_interrupted_init_are_removed_and_the_init_completes() {
    let tmp = tempfile::tempdir().unwrap();
    // What an init killed before it finished leaves (the staged store and KEK).
    let dir = data(tmp.path());
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    std::fs::write(dir.join("kmsd.redb.init"), b"half a store").unwrap();
    std::fs::write(dir.join("vault.kek.init"), b"half a key").unwrap();
    let out = run(tmp.path(), &["init"], &[]);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    assert_eq!(msg.matches("rak_").count(), 1, "{msg}");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["kmsd.redb", "vault.kek"], "{msg}");
    assert_eq!((mode(&dir.join("kmsd.redb")), mode(&dir.join("vault.kek"))), (0o600, 0o600));
}

#[tokio::test]
async fn a_deleted_store_beside_its_kek_is_refused_naming_the_file_until_forced() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(run(tmp.path(), &["init"], &[]).status.success());
    let (store, kek) = (data(tmp.path()).join("kmsd.redb"), data(tmp.path()).join("vault.kek"));
    std::fs::remove_file(&store).unwrap();
    let kek_sum = sha256_file(&kek);

    let (status, out) = Daemon::try_start(tmp.path(), &[]).err().expect("serve must not make a new store silently");
    assert!(status.is_some_and(|s| !s.success()), "{out}");
    let out_init = run(tmp.path(), &["init"], &[]);
    assert!(!out_init.status.success(), "init must refuse too: {}", text(&out_init));
    for msg in [out, text(&out_init)] {
        // The paths as the config gives them (data_dir = "kmsd-data").
        assert!(msg.contains("KEK file kmsd-data/vault.kek"), "names the KEK file: {msg}");
        assert!(msg.contains("store kmsd-data/kmsd.redb does not exist"), "names the missing store: {msg}");
        assert!(msg.contains("--force-new-store"), "names the flag: {msg}");
        assert!(!msg.contains("rak_"), "{msg}");
    }
    assert!(!store.exists(), "a refused start creates no store");
    assert_eq!(sha256_file(&kek), kek_sum, "the KEK is untouched");

    let forced = run(tmp.path(), &["init", "--force-new-store"], &[]);
    let msg = text(&forced);
    assert!(forced.status.success(), "{msg}");
    assert_eq!(sha256_file(&kek), kek_sum, "the new store is under the same KEK");
    let admin = bootstrap_key(&msg);
    let d = Daemon::start(tmp.path(), &[]);
    let (code, _) = call(&d.admin, &admin, "GET", "/v1/admin/keys", None).await;
    assert_eq!(code, 200);
}

#[test]
fn a_store_or_data_dir_open_to_other_users_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(run(tmp.path(), &["init"], &[]).status.success());
    let (dir, store) = (data(tmp.path()), data(tmp.path()).join("kmsd.redb"));

    chmod(&store, 0o644);
    let sum = sha256_file(&store);
    let (status, out) = Daemon::try_start(tmp.path(), &[]).err().expect("a 0644 store must be refused");
    assert!(status.is_some_and(|s| !s.success()), "{out}");
    assert!(out.contains("store kmsd-data/kmsd.redb is accessible to group or others (mode 644)"), "{out}");
    assert!(out.contains("run: chmod 600 kmsd-data/kmsd.redb"), "{out}");
    assert_eq!(sha256_file(&store), sum, "a refused start writes nothing");
    assert_eq!(mode(&store), 0o644, "kmsd does not change the mode itself");
    chmod(&store, 0o600);

    chmod(&dir, 0o755);
    let (status, out) = Daemon::try_start(tmp.path(), &[]).err().expect("a 0755 data dir must be refused");
    assert!(status.is_some_and(|s| !s.success()), "{out}");
    assert!(out.contains("data dir kmsd-data is accessible to group or others (mode 755)"), "{out}");
    assert!(out.contains("run: chmod 700 kmsd-data"), "{out}");
    chmod(&dir, 0o700);

    drop(Daemon::start(tmp.path(), &[]));
}
