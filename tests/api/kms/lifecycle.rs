//! A KMS key's life through the daemon: tokens it signs verify at independent
//! verifiers, rotation moves the keyset's alias, emergency revoke disables the
//! key in KMS, and destruction schedules its deletion.

use std::time::Duration;

use aws_sdk_kms::types::KeyState;
use serde_json::{json, Value};

use super::deployment::Deployment;
use super::emulator::Emulator;
use crate::rotation::FAST_POLICY;
use crate::support::call;
use crate::tokens::{part, Env, ISSUER, PYJWT_VERIFY};
use crate::{node, python};

async fn token(e: &Env, id: &str, alg: &str) -> String {
    let (status, pair) = e.issue(&e.admin, json!({ "identityId": id, "audience": ["svc"], "algorithm": alg })).await;
    assert_eq!(status, 201, "{pair}");
    pair["accessToken"].as_str().unwrap().to_owned()
}

fn kid(token: &str) -> String {
    part(token, 0)["kid"].as_str().unwrap().to_owned()
}

async fn rotate_now(e: &Env, keyset: &str) -> Value {
    let body = json!({ "keyset": keyset, "immediate": true });
    let (status, r) = call(&e.d.admin, &e.admin, "POST", "/v1/admin/keys/rotate", Some(body)).await;
    assert_eq!(status, 200, "{r}");
    r
}

#[tokio::test]
async fn kms_signed_rs256_and_eddsa_tokens_verify_with_pyjwt_and_jose_across_a_rotation() {
    let emulator = Emulator::start();
    let url = emulator.url();
    let dep = Deployment::start(&url, &url, None, &[("KMSD_AWS_KMS__INSTANCE", "blue")]).await;
    let e = &dep.e;
    let backends: Vec<(String, String)> = dep
        .keys()
        .await
        .iter()
        .map(|k| (k["keyset"].as_str().unwrap().to_owned(), k["backend"].as_str().unwrap().to_owned()))
        .collect();
    for (keyset, backend) in [("access", "aws-kms"), ("edge", "aws-kms"), ("refresh", "vault")] {
        assert!(backends.contains(&(keyset.into(), backend.into())), "{keyset} in {backend}: {backends:?}");
    }
    let id = e.identity("kms-verified", &["relayfile:fs:read:/docs/*"]).await;
    let rs_old = token(e, &id, "RS256").await;
    let ed = token(e, &id, "EdDSA").await;
    let old = kid(&rs_old);

    let r = rotate_now(e, "access").await;
    assert_eq!(r["oldKeyId"], old.as_str());
    let new = r["newKeyId"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let new_key = dep.kms_key_of(&new).await;
    assert_eq!(super::key_state(&dep.kms, &new_key).await, KeyState::Enabled);
    // The instance-scoped alias follows the newest key; the old key stays enabled.
    let alias = dep.kms.describe_key().key_id("alias/kmsd-blue-access").send().await.unwrap();
    assert_eq!(alias.key_metadata().unwrap().key_id(), new_key);
    let aliases = dep.kms.list_aliases().limit(100).send().await.unwrap();
    let mut ours: Vec<&str> =
        aliases.aliases().iter().filter_map(|a| a.alias_name()).filter(|n| n.starts_with("alias/kmsd-")).collect();
    ours.sort_unstable();
    assert_eq!(ours, ["alias/kmsd-blue-access", "alias/kmsd-blue-edge"]);
    assert_eq!(dep.state_of(&old).await, KeyState::Enabled);
    let kids = dep.jwks_kids().await;
    assert!(kids.contains(&old) && kids.contains(&new), "{kids:?}");
    let rs_new = token(e, &id, "RS256").await;
    assert_eq!(kid(&rs_new), new, "new tokens carry the new kid");

    let tokens = [rs_old, ed, rs_new];
    let algs: Vec<Value> = tokens.iter().map(|t| part(t, 0)["alg"].clone()).collect();
    assert_eq!(algs, ["RS256", "EdDSA", "RS256"]);
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let jose = node::verify(&e.jwks_url(), ISSUER, "svc", &[], &refs);
    assert!(jose.iter().all(|r| r["ok"] == true), "jose: {jose:?}");
    let mut args = vec![e.jwks_url(), ISSUER.into(), "svc".into()];
    args.extend(tokens.iter().cloned());
    let out = tokio::task::spawn_blocking(move || {
        python::run(PYJWT_VERIFY, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let pyjwt: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(pyjwt, vec![json!({ "ok": true, "sub": id }); 3], "PyJWT");
}

#[tokio::test]
async fn revoke_disables_the_kms_key_and_destruction_schedules_its_deletion() {
    let emulator = Emulator::start();
    let url = emulator.url();
    let dep = Deployment::start(&url, &url, Some(FAST_POLICY), &[]).await;
    let e = &dep.e;
    let id = e.identity("kms-lifecycle", &["relayfile:fs:read:/a/*"]).await;
    let first = kid(&token(e, &id, "RS256").await);
    // `first` retires now: out of the JWKS after the 5 s overlap, destroyed 10 s later.
    let second = rotate_now(e, "access").await["newKeyId"].as_str().unwrap().to_owned();
    let signed = token(e, &id, "RS256").await;
    assert_eq!(kid(&signed), second);
    assert_ne!(e.introspect(&signed).await, Value::Null);

    let (status, v) = call(&e.d.admin, &e.admin, "POST", &format!("/v1/admin/keys/{second}/revoke"), None).await;
    assert_eq!(status, 200, "{v}");
    let second_key = dep.kms_key_of(&second).await;
    assert_eq!(super::key_state(&dep.kms, &second_key).await, KeyState::Disabled);
    assert!(!dep.jwks_kids().await.contains(&second), "revoked kid left the JWKS");
    assert_eq!(e.introspect(&signed).await, Value::Null, "its tokens are refused");
    let replacement = v["replacementKeyId"].as_str().unwrap();
    assert_eq!(kid(&token(e, &id, "RS256").await), replacement);
    assert_eq!(dep.state_of(replacement).await, KeyState::Enabled);

    let first_key = dep.kms_key_of(&first).await;
    dep.wait_for_state(&first_key, KeyState::PendingDeletion, Duration::from_secs(30)).await;
    let keys = dep.keys().await;
    let listed = keys.iter().find(|k| k["keyId"] == first.as_str()).unwrap();
    assert_eq!(listed["state"], "destroyed", "{listed}");
    // The revoked key is destroyed `destroy_delay` after its revocation.
    dep.wait_for_state(&second_key, KeyState::PendingDeletion, Duration::from_secs(20)).await;
}
