//! The container image (`deploy/Containerfile` with `deploy/container/kmsd.toml`)
//! and the Kubernetes manifests (`deploy/kubernetes/`), held to the daemon
//! they package. No container engine or cluster runs here, so the recipes are
//! read (the Containerfile instruction by instruction, the manifests with
//! PyYAML from the fuzz venv) and their configs are given to the real binary
//! as they are: `check-config` on the file itself, and `serve` with only the
//! data dir, the KEK's location and the listen ports moved to a temp dir and
//! 127.0.0.1.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::daemon::{bootstrap_key, command, text, Daemon};
use crate::support::get;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// How the README makes a KEK (the Secret's value and the container's secret file).
const KEK_COMMAND: &str = "openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\\n'";

/// A fresh KEK made by the README's own command.
fn readme_kek() -> String {
    assert!(read("README.md").contains(KEK_COMMAND), "the README makes the KEK with: {KEK_COMMAND}");
    let out = Command::new("sh").args(["-c", KEK_COMMAND]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `kmsd check-config` on `config` exactly as written (its own listen
/// addresses: nothing is bound), plus `env`.
fn check_config(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = command(dir, env);
    cmd.env_remove("KMSD_LISTEN__PUBLIC").env_remove("KMSD_LISTEN__ADMIN").env("KMSD_CONFIG", config);
    cmd.arg("check-config").stdin(Stdio::null()).output().unwrap()
}

fn toml_file(text: &str) -> toml::Table {
    text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn field<'a>(config: &'a toml::Table, section: Option<&str>, name: &str) -> &'a str {
    let table = match section {
        Some(s) => config[s].as_table().unwrap(),
        None => config,
    };
    table.get(name).and_then(toml::Value::as_str).unwrap_or_else(|| panic!("{section:?}.{name} not set"))
}

fn listen(config: &toml::Table, which: &str) -> SocketAddr {
    field(config, Some("listen"), which).parse().unwrap()
}

/// The configs' public listener is reachable from outside the container or
/// pod; the admin one is not (it would need TLS: the config rules).
fn assert_public_out_admin_in(config: &toml::Table) {
    assert!(listen(config, "public").ip().is_unspecified(), "public listener on every interface");
    assert!(listen(config, "admin").ip().is_loopback(), "admin listener on loopback");
}

/// GETs each path on the public listener: every one must be 200.
async fn assert_served(d: &Daemon, paths: &BTreeSet<String>) {
    assert!(!paths.is_empty());
    for path in paths {
        let (status, _, body) = get(&format!("{}{path}", d.public), &[]).await;
        assert_eq!(status, 200, "GET {path}: {body}");
    }
}

// ---- the container image ----

/// The Containerfile's instructions (continuation lines joined, comments
/// dropped) as (KEYWORD, arguments).
fn instructions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in read("deploy/Containerfile").lines().map(str::trim) {
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                let (word, args) = pending.split_once(' ').unwrap_or((&pending, ""));
                out.push((word.to_ascii_uppercase(), args.trim().to_owned()));
                pending.clear();
            }
        }
    }
    out
}

/// The instructions of the last (runtime) stage.
fn runtime_stage() -> Vec<(String, String)> {
    let all = instructions();
    let last_from = all.iter().rposition(|(w, _)| w == "FROM").unwrap();
    all[last_from..].to_vec()
}

fn one<'a>(stage: &'a [(String, String)], word: &str) -> &'a str {
    let found: Vec<_> = stage.iter().filter(|(w, _)| w == word).collect();
    assert_eq!(found.len(), 1, "{word} in the runtime stage: {found:?}");
    &found[0].1
}

/// A JSON-array instruction argument (`VOLUME ["/x"]`, `ENTRYPOINT [...]`).
fn json_array(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{args}: {e}"))
}

const IMAGE_CONFIG: &str = "deploy/container/kmsd.toml";

#[test]
fn the_containerfile_builds_the_release_binary_and_runs_it_without_a_shell_as_a_numeric_user() {
    let all = instructions();
    let builds = all.iter().filter(|(w, a)| w == "RUN" && a.contains("cargo build --release --locked --bin kmsd"));
    assert_eq!(builds.count(), 2, "the dependency layer, then kmsd: {all:?}");
    let stage = runtime_stage();
    // No RUN in the runtime stage: it has no shell to run one with.
    assert!(stage.iter().all(|(w, _)| w != "RUN"), "{stage:?}");
    assert!(stage.iter().any(|(w, a)| w == "COPY" && a == "--from=build /src/target/release/kmsd /usr/local/bin/kmsd"));
    assert_eq!(json_array(one(&stage, "ENTRYPOINT")), ["/usr/local/bin/kmsd"]);
    assert_eq!(json_array(one(&stage, "CMD")), ["serve"]);
    let (uid, gid) = one(&stage, "USER").split_once(':').unwrap();
    assert!(uid.parse::<u32>().unwrap() > 0 && gid.parse::<u32>().is_ok(), "a numeric non-root user");
    let ignored = read(".dockerignore");
    assert!(ignored.lines().any(|l| l.trim() == "target/"), "the build context leaves target/ out");
}

#[test]
fn the_containerfile_exposes_volumes_and_configures_what_its_kmsd_toml_says() {
    let stage = runtime_stage();
    let config = toml_file(&read(IMAGE_CONFIG));
    let path = one(&stage, "ENV").strip_prefix("KMSD_CONFIG=").unwrap().to_owned();
    assert!(stage.iter().any(|(w, a)| w == "COPY" && *a == format!("{IMAGE_CONFIG} {path}")), "{path}");
    // EXPOSE: exactly the listeners outside the container's loopback.
    assert_public_out_admin_in(&config);
    let exposed: BTreeSet<u16> = one(&stage, "EXPOSE").split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(exposed, BTreeSet::from([listen(&config, "public").port()]));
    // The store is inside the one volume, the KEK is not (a mounted secret).
    let [volume] = &json_array(one(&stage, "VOLUME"))[..] else { panic!("one volume") };
    let data_dir = field(&config, None, "data_dir");
    assert!(data_dir.starts_with(&format!("{volume}/")), "{data_dir} inside {volume}");
    assert_eq!(field(&config, Some("vault"), "kek"), "file");
    let kek_file = field(&config, Some("vault"), "kek_file");
    assert!(kek_file.starts_with("/run/secrets/") && !kek_file.starts_with(volume.as_str()), "{kek_file}");
    // The volume's directory is the runtime user's, mode 0700.
    let user = one(&stage, "USER");
    let state = stage.iter().find(|(w, a)| w == "COPY" && a.ends_with(" /var/lib/")).unwrap();
    assert_eq!(state.1, format!("--from=build --chown={user} /state/ /var/lib/"));
    assert_eq!(volume, "/var/lib/kmsd", "the directory COPY makes");
    assert!(instructions().iter().any(|(w, a)| w == "RUN" && a.contains("install -d -m 0700 /state/kmsd")));
}

#[tokio::test]
async fn the_image_config_checks_initializes_under_the_mounted_kek_and_serves_the_probes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = root().join(IMAGE_CONFIG);
    let kek = tmp.path().join("kmsd-kek");
    std::fs::write(&kek, readme_kek()).unwrap();
    // As `podman run --secret kmsd-kek,mode=0400,uid=...` mounts it.
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o400)).unwrap();
    let data = tmp.path().join("volume/data");
    let (kek, data) = (kek.to_str().unwrap(), data.to_str().unwrap());
    let env = [("KMSD_CONFIG", config.to_str().unwrap()), ("KMSD_VAULT__KEK_FILE", kek), ("KMSD_DATA_DIR", data)];
    let out = check_config(tmp.path(), &config, &env[1..2]);
    assert!(out.status.success(), "{}", text(&out));

    // A KEK that is there before the store: the first start is the README's
    // `init --force-new-store`, and a plain serve refuses.
    let refused = Daemon::try_start(tmp.path(), &env).err().expect("serve refuses a KEK without a store");
    assert!(refused.1.contains("kmsd init --force-new-store"), "{}", refused.1);
    let out = command(tmp.path(), &env).args(["init", "--force-new-store"]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(bootstrap_key(&text(&out)).starts_with("rak_"));
    let meta = std::fs::metadata(data).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700, "the data dir kmsd made inside the volume");

    let d = Daemon::start(tmp.path(), &env);
    assert_served(&d, &BTreeSet::from(["/livez".to_owned(), "/readyz".to_owned()])).await;
}

// ---- Kubernetes ----

/// Every document of a manifest, parsed by PyYAML into JSON.
fn manifest(name: &str) -> Vec<Value> {
    const TO_JSON: &str = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let path = root().join("deploy/kubernetes").join(name);
    let out = Command::new(crate::python::fuzz_python()).args(["-c", TO_JSON]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn only(name: &str, kind: &str) -> Value {
    let docs = manifest(name);
    let [doc] = &docs[..] else { panic!("{name}: one document") };
    assert_eq!(doc["kind"], kind, "{name}");
    doc.clone()
}

fn statefulset() -> Value {
    only("statefulset.yaml", "StatefulSet")
}

fn pod(sts: &Value) -> &Value {
    &sts["spec"]["template"]["spec"]
}

fn container(sts: &Value) -> &Value {
    let [c] = &pod(sts)["containers"].as_array().unwrap()[..] else { panic!("one container") };
    c
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// The ConfigMap's kmsd.toml, and where the StatefulSet mounts it.
fn configmap_config(sts: &Value) -> (String, String) {
    let cm = only("configmap.yaml", "ConfigMap");
    let name = str_of(&cm["metadata"]["name"]);
    let volumes = pod(sts)["volumes"].as_array().unwrap();
    let volume = volumes.iter().find(|v| v["configMap"]["name"] == name).expect("the ConfigMap is a volume");
    let mounts = container(sts)["volumeMounts"].as_array().unwrap();
    let mount = mounts.iter().find(|m| m["name"] == volume["name"]).unwrap();
    assert_eq!(mount["readOnly"], true);
    let [(key, toml)] = &cm["data"].as_object().unwrap().iter().collect::<Vec<_>>()[..] else { panic!("one key") };
    (str_of(toml).to_owned(), format!("{}/{key}", str_of(&mount["mountPath"])))
}

/// The named container port `port` refers to.
fn container_port(sts: &Value, port: &Value) -> u16 {
    let ports = container(sts)["ports"].as_array().unwrap();
    let p = ports.iter().find(|p| p["name"] == *port).unwrap_or_else(|| panic!("no container port {port}"));
    u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap()
}

/// The Secret the KEK comes from: (variable, secret name, key).
fn kek_secret(sts: &Value) -> (String, String, String) {
    let env = container(sts)["env"].as_array().unwrap();
    let [var] = &env.iter().filter(|e| e["valueFrom"]["secretKeyRef"].is_object()).collect::<Vec<_>>()[..] else {
        panic!("one secret variable")
    };
    let secret = &var["valueFrom"]["secretKeyRef"];
    assert!(var.get("value").is_none(), "a reference, never a value");
    (str_of(&var["name"]).into(), str_of(&secret["name"]).into(), str_of(&secret["key"]).into())
}

#[test]
fn the_statefulset_is_one_hardened_non_root_replica_of_the_image_on_a_volume_claim() {
    let sts = statefulset();
    assert_eq!(sts["spec"]["replicas"], 1, "redb: one process, one file");
    let (pod, c) = (pod(&sts), container(&sts));
    let (sc, csc) = (&pod["securityContext"], &c["securityContext"]);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(csc["runAsNonRoot"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(csc["capabilities"].get("add").is_none());
    for ctx in [sc, csc] {
        assert_eq!(ctx["seccompProfile"]["type"], "RuntimeDefault");
    }
    // Only once: a change of policy at every mount would open the store's
    // files to the group, and kmsd would refuse them.
    assert_eq!(sc["fsGroupChangePolicy"], "OnRootMismatch");
    assert_eq!(pod["automountServiceAccountToken"], false);

    // The image's user and volume.
    let stage = runtime_stage();
    let user = format!("{}:{}", sc["runAsUser"], sc["runAsGroup"]);
    assert_eq!(one(&stage, "USER"), user);
    assert_eq!(sc["fsGroup"], sc["runAsGroup"]);
    let [volume] = &json_array(one(&stage, "VOLUME"))[..] else { panic!("one volume") };
    let [claim] = &sts["spec"]["volumeClaimTemplates"].as_array().unwrap()[..] else { panic!("one claim") };
    let mounts = c["volumeMounts"].as_array().unwrap();
    let data = mounts.iter().find(|m| m["name"] == claim["metadata"]["name"]).expect("the claim is mounted");
    assert_eq!(str_of(&data["mountPath"]), volume);
    let (toml, mounted) = configmap_config(&sts);
    let data_dir = field(&toml_file(&toml), None, "data_dir").to_owned();
    assert!(data_dir.starts_with(&format!("{volume}/")), "{data_dir}: a directory kmsd makes inside the claim");
    assert_eq!(claim["spec"]["accessModes"], serde_json::json!(["ReadWriteOnce"]));
    // The ConfigMap replaces the image's config file.
    assert_eq!(one(&stage, "ENV"), format!("KMSD_CONFIG={mounted}"));
    // The image the README builds.
    let image = str_of(&c["image"]);
    assert!(read("README.md").contains(&format!("-f deploy/Containerfile -t {image} .")), "{image}");
}

#[test]
fn the_kek_is_a_secret_reference_the_readme_creates_and_the_config_reads() {
    let sts = statefulset();
    let (var, secret, key) = kek_secret(&sts);
    let (toml, _) = configmap_config(&sts);
    let config = toml_file(&toml);
    assert_eq!(field(&config, Some("vault"), "kek"), "env");
    assert_eq!(field(&config, Some("vault"), "kek_env"), var);
    let readme = read("README.md");
    let create = format!("kubectl create secret generic {secret} --from-file={key}=");
    assert!(readme.contains(&create), "the README creates the Secret: {create}");
    // `kubectl apply -k` applies every manifest there is, and none holds a
    // Secret: its value is never in the repository.
    let files: BTreeSet<String> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    let listed: BTreeSet<String> = manifest("kustomization.yaml")[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r).to_owned())
        .collect();
    assert_eq!(files, listed);
    for name in &files {
        assert!(manifest(name).iter().all(|d| d["kind"] != "Secret"), "{name}");
    }
}

#[test]
fn kubernetes_service_links_would_be_config_errors_so_the_statefulset_turns_them_off() {
    let tmp = tempfile::tempdir().unwrap();
    let sts = statefulset();
    assert_eq!(pod(&sts)["enableServiceLinks"], false);
    // What the kubelet would inject for the Service `kmsd`.
    let (toml, _) = configmap_config(&sts);
    let config = tmp.path().join("kmsd.toml");
    std::fs::write(&config, toml).unwrap();
    let kek = readme_kek();
    let links =
        [("KMSD_VAULT_KEK", kek.as_str()), ("KMSD_SERVICE_HOST", "10.96.0.10"), ("KMSD_PORT", "tcp://10.96.0.10:8787")];
    let service = only("service.yaml", "Service");
    assert_eq!(service["metadata"]["name"], "kmsd");
    let out = check_config(tmp.path(), &config, &links);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("service_host: unknown field"), "{}", text(&out));
}

#[tokio::test]
async fn the_configmap_config_checks_and_serves_every_probe_of_the_statefulset_on_its_port() {
    let tmp = tempfile::tempdir().unwrap();
    let sts = statefulset();
    let (toml, _) = configmap_config(&sts);
    let config = toml_file(&toml);
    let file = tmp.path().join("kmsd.toml");
    std::fs::write(&file, &toml).unwrap();
    let (var, _, _) = kek_secret(&sts);
    let kek = readme_kek();
    let data = tmp.path().join("volume/data");
    let env = [(var.as_str(), kek.as_str()), ("KMSD_DATA_DIR", data.to_str().unwrap())];
    let out = check_config(tmp.path(), &file, &env[..1]);
    assert!(out.status.success(), "{}", text(&out));

    // Probes come from the kubelet, the Service from other pods: both to the
    // public listener, the admin one stays on loopback.
    assert_public_out_admin_in(&config);
    let public = listen(&config, "public").port();
    let c = container(&sts);
    let mut paths = BTreeSet::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let http = &c[probe]["httpGet"];
        assert_eq!(container_port(&sts, &http["port"]), public, "{probe}");
        paths.insert(str_of(&http["path"]).to_owned());
    }
    assert_eq!(str_of(&c["readinessProbe"]["httpGet"]["path"]), "/readyz");
    let service = only("service.yaml", "Service");
    for port in service["spec"]["ports"].as_array().unwrap() {
        assert_eq!(container_port(&sts, &port["targetPort"]), public, "the Service reaches the public listener only");
    }

    // The first start initializes the store under the Secret's KEK by itself.
    let file = file.to_str().unwrap();
    let d = Daemon::start(tmp.path(), &[env[0], env[1], ("KMSD_CONFIG", file)]);
    assert!(d.output().contains("bootstrap admin API key"), "{}", d.output());
    assert_served(&d, &paths).await;
}

// ---- the HA variant (deploy/kubernetes/ha/) ----

fn ha_statefulset() -> Value {
    only("ha/statefulset.yaml", "StatefulSet")
}

/// `env` of the HA patch's container, by name.
fn ha_env(sts: &Value, name: &str) -> Value {
    let env = container(sts)["env"].as_array().unwrap();
    env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no {name}")).clone()
}

#[test]
fn the_ha_variant_is_three_named_replicas_spread_over_nodes_with_the_store_url_from_a_secret() {
    let kustomization = &manifest("ha/kustomization.yaml")[0];
    let resources: Vec<&str> = kustomization["resources"].as_array().unwrap().iter().map(str_of).collect();
    assert_eq!(resources, ["../", "poddisruptionbudget.yaml"], "the base and a disruption budget");
    let patches: BTreeSet<&str> =
        kustomization["patches"].as_array().unwrap().iter().map(|p| str_of(&p["path"])).collect();
    assert_eq!(patches, BTreeSet::from(["configmap.yaml", "statefulset.yaml"]));

    let (base, ha) = (statefulset(), ha_statefulset());
    assert_eq!(ha["metadata"]["name"], base["metadata"]["name"], "a patch of the base StatefulSet");
    assert_eq!(ha["spec"]["replicas"], 3);
    assert_eq!(ha["spec"]["volumeClaimTemplates"], serde_json::json!([]), "the store is the database");
    let data = pod(&ha)["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "data").cloned().unwrap();
    assert!(data["emptyDir"].is_object(), "{data}");
    assert_eq!(container(&ha)["name"], container(&base)["name"]);
    let replica = ha_env(&ha, "KMSD_HA__REPLICA");
    assert_eq!(replica["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name", "each replica is named by its pod");
    let url = ha_env(&ha, "KMSD_STORAGE_URL");
    let secret = &url["valueFrom"]["secretKeyRef"];
    assert!(url.get("value").is_none(), "a reference, never a value");
    let create =
        format!("kubectl create secret generic {} --from-literal={}=", str_of(&secret["name"]), str_of(&secret["key"]));
    assert!(read("README.md").contains(&create), "the README creates the Secret: {create}");
    let spread = &pod(&ha)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(spread["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");

    let pdb = only("ha/poddisruptionbudget.yaml", "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert_eq!(pdb["spec"]["selector"], base["spec"]["selector"], "the budget covers the replicas");
    assert!(manifest("ha/poddisruptionbudget.yaml").iter().all(|d| d["kind"] != "Secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ha_config_checks_and_two_replicas_serve_their_probes_with_one_leader() {
    let cm = only("ha/configmap.yaml", "ConfigMap");
    assert_eq!(
        cm["metadata"]["name"],
        only("configmap.yaml", "ConfigMap")["metadata"]["name"],
        "it replaces the base's"
    );
    let toml = str_of(&cm["data"]["kmsd.toml"]).to_owned();
    let config = toml_file(&toml);
    assert_eq!(field(&config, Some("storage"), "engine"), "postgres");
    assert_public_out_admin_in(&config);
    let url_var = field(&config, Some("storage"), "url_env");
    assert_eq!(url_var, str_of(&ha_env(&ha_statefulset(), "KMSD_STORAGE_URL")["name"]));

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("kmsd.toml");
    std::fs::write(&file, &toml).unwrap();
    let db = crate::postgres::harness::fresh_db().await;
    let url = crate::postgres::url_text(&db.url);
    let kek = readme_kek();
    let (var, _, _) = kek_secret(&statefulset());
    let env = [(var.as_str(), kek.as_str()), (url_var, url.as_str())];
    let out = check_config(tmp.path(), &file, &env);
    assert!(out.status.success(), "{}", text(&out));

    let file = file.to_str().unwrap();
    let start = |name: &'static str| {
        let dir = tmp.path().join(name);
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let env = [
            env[0],
            env[1],
            ("KMSD_CONFIG", file),
            ("KMSD_DATA_DIR", data.to_str().unwrap()),
            ("KMSD_HA__REPLICA", name),
        ];
        Daemon::start(&dir, &env)
    };
    let (a, b) = (start("kmsd-0"), start("kmsd-1"));
    let ha = crate::postgres::replicas::one_leader(&[&a, &b], std::time::Duration::from_secs(15)).await;
    let paths: BTreeSet<String> = ["/livez", "/readyz"].map(String::from).into();
    for d in [&a, &b] {
        assert_served(d, &paths).await;
    }
    eprintln!("kmsd-{ha} leads");
    a.stop();
    b.stop();
}
