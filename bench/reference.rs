//! The references the workloads are compared with: the raw sign rate of the
//! exact key types kmsd uses (aws-lc-rs through kmsd's own vault key type),
//! on one core and on all cores, and a bare axum JSON echo server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::routing::post;
use axum::{Json, Router};
use kmsd::keys::KeySpec;
use kmsd::vault::PrivateKey;
use serde_json::Value;

/// How the tables name a key type.
pub fn label(spec: KeySpec) -> &'static str {
    match spec {
        KeySpec::Rsa2048 => "RSA-2048",
        KeySpec::Rsa3072 => "RSA-3072",
        KeySpec::Rsa4096 => "RSA-4096",
        KeySpec::Ed25519 => "Ed25519",
        KeySpec::P256 => "P-256",
    }
}

/// The sign (and single-core verify) rate of one key type.
#[derive(Debug, Clone)]
pub struct SignRate {
    pub spec: KeySpec,
    pub single_core: f64,
    pub all_cores: f64,
    pub verify_single_core: f64,
}

/// A JWS signing input of the size kmsd signs (header + claims, base64url).
fn message() -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..640).map(|i| if i == 100 { b'.' } else { alphabet[(i * 7) % alphabet.len()] }).collect()
}

/// Signs in a loop on `threads` threads for `time`; signatures per second.
fn sign_rate(key: &Arc<PrivateKey>, threads: usize, time: Duration) -> anyhow::Result<f64> {
    let msg = Arc::new(message());
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (key, msg) = (key.clone(), msg.clone());
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut n = 0u64;
                while started.elapsed() < time {
                    key.sign(&msg).context("sign")?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| anyhow::anyhow!("a signing thread panicked"))??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn verify_rate(key: &PrivateKey, time: Duration) -> anyhow::Result<f64> {
    let msg = message();
    let sig = key.sign(&msg).context("sign")?;
    let public = key.public_key();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < time {
        anyhow::ensure!(public.verify(&msg, &sig), "a signature of our own does not verify");
        n += 1;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// RSA-2048, RSA-3072, Ed25519 and P-256: one core, then `threads` cores,
/// `time` each; verify on one core for a quarter of that.
pub fn sign_rates(threads: usize, time: Duration) -> anyhow::Result<Vec<SignRate>> {
    let mut out = Vec::new();
    for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072, KeySpec::Ed25519, KeySpec::P256] {
        let (key, _pkcs8) = PrivateKey::generate(spec).with_context(|| format!("generating {}", spec.as_str()))?;
        let key = Arc::new(key);
        let single_core = sign_rate(&key, 1, time)?;
        let all_cores = sign_rate(&key, threads, time)?;
        let verify_single_core = verify_rate(&key, time / 4)?;
        eprintln!(
            "  {:<8} sign {:>7.0}/s on 1 core, {:>7.0}/s on {threads}; verify {:>7.0}/s on 1 core",
            label(spec),
            single_core,
            all_cores,
            verify_single_core
        );
        out.push(SignRate { spec, single_core, all_cores, verify_single_core });
    }
    Ok(out)
}

/// A body the size of a token pair reply (RS256-3072 access token, EdDSA
/// refresh token), for the echo reference.
pub fn token_sized_body() -> String {
    let filler = |n: usize| "x".repeat(n);
    serde_json::json!({
        "accessToken": filler(1050),
        "refreshToken": filler(620),
        "accessTokenExpiresAt": "2026-11-29T19:36:42.000Z",
        "refreshTokenExpiresAt": "2026-11-30T18:36:42.000Z",
        "tokenType": "Bearer",
    })
    .to_string()
}

/// The echo server (run as `kmsd-bench echo-server`, a process of its own
/// like the daemon): `POST /echo` parses a JSON body and serializes it back.
/// Same runtime as kmsd (tokio multi-thread, one worker per core), no middleware.
pub fn serve_echo() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("echo listening public={}", listener.local_addr()?);
        let app = Router::new().route("/echo", post(|Json(v): Json<Value>| async move { Json(v) }));
        axum::serve(listener, app).await?;
        Ok(())
    })
}
