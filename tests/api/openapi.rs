//! `docs/openapi.json` against the daemon: served as is on both listeners,
//! every served route documented and every documented route served, and a
//! bounded, seeded property-based fuzz of the public API from the document
//! (schemathesis, in its own venv `target/fuzz-venv`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{bootstrap_key, client, Daemon};
use crate::discovery::{assert_served, PUBLIC_ROUTES};

/// Every route of the admin listener (besides `/openapi.json`).
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/v1/health"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/admin/keys"),
    ("GET", "/v1/admin/audit"),
    ("GET", "/v1/admin/audit/verify"),
    ("POST", "/v1/admin/keys/rotate"),
    ("POST", "/v1/admin/keys/rollback"),
    ("POST", "/v1/admin/keys/{kid}/revoke"),
    ("POST", "/v1/admin/rotation/pause"),
    ("POST", "/v1/admin/rotation/resume"),
    ("GET", "/v1/admin/rotation/plan"),
    ("GET", "/v1/admin/migration"),
    ("POST", "/v1/admin/migration"),
    ("GET", "/v1/admin/backup"),
    ("POST", "/v1/api-keys"),
    ("GET", "/v1/api-keys"),
    ("POST", "/v1/api-keys/{id}/revoke"),
];

type Routes = BTreeSet<(String, String)>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn document() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("docs/openapi.json")).unwrap()).unwrap()
}

fn with_openapi(list: &[(&str, &str)]) -> Routes {
    list.iter().chain([&("GET", "/openapi.json")]).map(|(m, p)| (m.to_string(), p.to_string())).collect()
}

/// The documented operations tagged for `listener` (`public` or `admin`).
fn documented(doc: &Value, listener: &str) -> Routes {
    let tag = format!("{listener} listener");
    let mut out = Routes::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag.as_str())) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every `.route("path", get(..).post(..))` in `src/http/` (outside tests):
/// the routes the routers can serve, whichever listener merges them.
fn routes_in_source() -> Routes {
    let mut out = Routes::new();
    for entry in std::fs::read_dir(root().join("src/http")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        for piece in text.split(".route(\"").skip(1) {
            let (path, rest) = piece.split_once('"').unwrap();
            let call = &rest[..rest.find(")\n").or_else(|| rest.find("))")).unwrap()];
            for m in ["get", "post", "patch", "delete", "put"] {
                if call.contains(&format!("{m}(")) {
                    out.insert((m.to_uppercase(), path.to_owned()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_is_served_and_matches_the_routes_of_both_listeners() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let doc = document();
    let kept = std::fs::read_to_string(root().join("docs/openapi.json")).unwrap();
    for base in [&d.public, &d.admin] {
        let resp = client().get(format!("{base}/openapi.json")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.text().await.unwrap(), kept, "{base} serves another document");
    }
    let (public, admin) = (with_openapi(PUBLIC_ROUTES), with_openapi(ADMIN_ROUTES));
    assert_eq!(documented(&doc, "public"), public, "public listener: documented vs served");
    assert_eq!(documented(&doc, "admin"), admin, "admin listener: documented vs served");
    let all: Routes = public.union(&admin).cloned().collect();
    assert_eq!(routes_in_source(), all, "a route in src/http/ is missing from the lists (and the document)");
    for (base, routes) in [(&d.public, &public), (&d.admin, &admin)] {
        for (method, path) in routes {
            assert_served(base, method, path, "documented").await;
        }
    }
}

/// The fuzzer's interpreter: `KMSD_FUZZ_PYTHON`, or `target/fuzz-venv`.
fn fuzzer() -> PathBuf {
    crate::python::fuzz_python().with_file_name("st")
}

#[test]
fn a_seeded_fuzz_of_the_public_api_finds_no_server_error_and_only_coded_errors() {
    let st = fuzzer();
    let tmp = tempfile::tempdir().unwrap();
    // The fuzzer sends bad credentials too: a failure budget it cannot
    // exhaust keeps the throttle's 429s from hiding the handlers.
    let d = Daemon::start(tmp.path(), &[("KMSD_AUTH__FAILURE_BURST", "1000000")]);
    let key = bootstrap_key(&d.output());
    let started = Instant::now();
    let out = Command::new(&st)
        .current_dir(tmp.path())
        .arg("run")
        .arg(root().join("docs/openapi.json"))
        .args(["--url", &d.public, "--include-tag", "public listener"])
        // Revoking API keys is left out: the fuzzer lists the caller's key
        // and revokes it, and every request after that is a 401.
        .args(["--exclude-path", "/v1/api-keys/{id}/revoke"])
        .args(["--header", &format!("x-api-key: {key}")])
        .args(["--checks", "not_a_server_error,response_schema_conformance,content_type_conformance"])
        .args(["--max-examples", "15", "--seed", "16", "--max-time", "40", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing,stateful", "--no-color", "--request-timeout", "10"])
        .args(["--generation-with-security-parameters", "false", "--report", "har"])
        .args(["--generation-database", "none", "--report-dir"])
        .arg(root().join("target/openapi-fuzz-report"))
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (pip install -r tests/python/requirements-fuzz.txt)", st.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    std::fs::write(root().join("target/openapi-fuzz.log"), &text).unwrap();
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    eprintln!("{}", text.lines().rev().take(12).collect::<Vec<_>>().join("\n"));
    assert!(text.contains("passed"), "schemathesis ran no operation:\n{text}");
    assert!(started.elapsed() < Duration::from_secs(90), "the fuzz run took {:?}", started.elapsed());
    drop(d);
}
