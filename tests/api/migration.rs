//! The HS256 cut-over against the real daemon: HS256 tokens in phase `hs256`
//! (checked by PyJWT with the shared secret), the publish-lead gate, the
//! computed sunset, rollback, the sunset timer (also across a restart), an
//! operator's immediate sunset, and the secret never leaving kmsd.

use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon::{bootstrap_key, client, Daemon};
use crate::support::call;
use crate::tokens::{part, ISSUER};

const SECRET: &str = "legacy-shared-secret-0123456789abcdef";

fn setup(dir: &std::path::Path) -> Vec<(String, String)> {
    setup_capped(dir, "6s")
}

/// `legacy_ttl_cap` is what the legacy system's tokens could live at most.
fn setup_capped(dir: &std::path::Path, legacy_ttl_cap: &str) -> Vec<(String, String)> {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, crate::rotation::FAST_POLICY).unwrap();
    let config = dir.join("kmsd.toml");
    let migration = format!("[migration]\nenabled = true\nkid = \"legacy-1\"\nlegacy_ttl_cap = \"{legacy_ttl_cap}\"\n");
    std::fs::write(&config, migration).unwrap();
    vec![
        ("KMSD_POLICY_FILE".into(), policy.display().to_string()),
        ("KMSD_CONFIG".into(), config.display().to_string()),
        ("KMSD_HS256_SECRET".into(), SECRET.into()),
    ]
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

struct M {
    d: Daemon,
    admin: String,
    id: String,
}

impl M {
    async fn start(dir: &std::path::Path, env: &[(String, String)], admin: Option<String>) -> M {
        let d = Daemon::start(dir, &refs(env));
        let admin = admin.unwrap_or_else(|| bootstrap_key(&d.output()));
        let (_, v) = call(&d.public, &admin, "GET", "/v1/identities", None).await;
        let id = match v["data"].as_array().and_then(|a| a.first()) {
            Some(i) => i["id"].as_str().unwrap().to_owned(),
            None => {
                let body = json!({ "name": "legacy", "sponsorId": "u", "scopes": ["relayfile:fs:read:/a/*"] });
                let (_, v) = call(&d.public, &admin, "POST", "/v1/identities", Some(body)).await;
                v["id"].as_str().unwrap().to_owned()
            }
        };
        M { d, admin, id }
    }

    async fn token(&self) -> String {
        let (status, v) =
            call(&self.d.public, &self.admin, "POST", "/v1/tokens", Some(json!({ "identityId": self.id }))).await;
        assert_eq!(status, 201, "{v}");
        v["accessToken"].as_str().unwrap().to_owned()
    }

    async fn introspect(&self, token: &str) -> Value {
        crate::support::introspect(&self.d.public, &self.admin, token).await
    }

    async fn act(&self, action: &str) -> (u16, Value) {
        call(&self.d.admin, &self.admin, "POST", "/v1/admin/migration", Some(json!({ "action": action }))).await
    }

    async fn status(&self) -> Value {
        call(&self.d.admin, &self.admin, "GET", "/v1/admin/migration", None).await.1
    }
}

const PYJWT_HS256: &str = r#"
import json, sys
import jwt
try:
    c = jwt.decode(sys.argv[2], sys.argv[1], algorithms=["HS256"], audience="relayfile", issuer=sys.argv[3])
    print(json.dumps({"ok": True, "sub": c["sub"]}))
except Exception as e:
    print(json.dumps({"ok": False, "error": type(e).__name__}))
"#;

/// `token` re-signed with the shared secret to expire in an hour: a legacy
/// token that only the sunset (not its own exp) can stop.
fn long_lived(token: &str) -> String {
    let mut claims = part(token, 1);
    claims["exp"] = json!(claims["iat"].as_i64().unwrap() + 3600);
    resign(token, &claims)
}

/// `claims` under `token`'s header, signed with the shared secret.
fn resign(token: &str, claims: &Value) -> String {
    let header = token.split('.').next().unwrap();
    let input = format!("{header}.{}", kmsd::encoding::b64url(claims.to_string().as_bytes()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!("{input}.{}", kmsd::encoding::b64url(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()))
}

fn ts(v: &Value) -> i64 {
    kmsd::clock::Timestamp::parse_iso(v.as_str().unwrap()).unwrap().unix()
}

#[tokio::test]
async fn hs256_tokens_verify_until_the_computed_sunset_and_never_after() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());
    let m = M::start(tmp.path(), &env, None).await;
    assert_eq!(m.status().await["state"], "hs256");
    let legacy = m.token().await;
    assert_eq!(part(&legacy, 0), json!({ "alg": "HS256", "typ": "JWT", "kid": "legacy-1" }));
    let t = legacy.clone();
    let py = tokio::task::spawn_blocking(move || crate::python::run(PYJWT_HS256, &[SECRET, &t, ISSUER])).await.unwrap();
    assert!(py.contains("\"ok\": true"), "PyJWT verifies kmsd's HS256 token with the shared secret: {py}");
    assert_ne!(m.introspect(&legacy).await, Value::Null);

    // The asymmetric key must have been published for the publish lead.
    let (status, v) = m.act("advance").await;
    assert_eq!((status, v["code"].as_str()), (409, Some("migration_conflict")), "{v}");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let latest = m.token().await;
    let latest_exp = part(&latest, 1)["exp"].as_i64().unwrap();
    let (status, v) = m.act("advance").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "asymmetric");
    let cutover = ts(&v["cutoverAt"]);
    let sunset = ts(&v["sunsetAt"]);
    assert_eq!(sunset, latest_exp.max(cutover + 6) + 1, "sunset_at = max(latest HS256 exp, cutover + cap) + skew");
    assert_eq!(part(&m.token().await, 0)["alg"], "RS256", "asymmetric signing after the cut-over");
    assert_ne!(m.introspect(&latest).await, Value::Null, "HS256 still verifies before sunset");

    // Rollback before sunset resumes HS256 signing; advancing again restarts the clock.
    let (status, v) = m.act("rollback").await;
    assert_eq!((status, v["state"].as_str()), (200, Some("hs256")));
    let again = m.token().await;
    assert_eq!(part(&again, 0)["alg"], "HS256");
    let (status, v) = m.act("advance").await;
    assert_eq!(status, 200, "{v}");
    let sunset = ts(&v["sunsetAt"]);
    assert!(v["hs256Verifications"].as_u64().unwrap() >= 2, "HS256 verifications are counted: {v}");
    let again = long_lived(&again);
    assert_ne!(m.introspect(&again).await, Value::Null, "an unexpired HS256 token verifies before sunset");

    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    while now() <= sunset + 1 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(m.status().await["state"], "sunset", "the timer fired");
    assert_eq!(m.introspect(&again).await, Value::Null, "HS256 refused after sunset");
    let (status, _) = m.act("rollback").await;
    assert_eq!(status, 409, "no rollback after sunset");

    // The secret is nowhere: JWKS, API output, logs.
    let jwks =
        client().get(format!("{}/.well-known/jwks.json", m.d.public)).send().await.unwrap().text().await.unwrap();
    assert!(!jwks.contains("oct") && !jwks.contains("legacy-1"));
    let (_, audit) = call(&m.d.admin, &m.admin, "GET", "/v1/admin/audit?limit=1000", None).await;
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["migration.start", "migration.advance", "migration.rollback", "migration.sunset"] {
        assert!(actions.contains(&a), "{a} audited: {actions:?}");
    }
    let (_, out) = m.d.stop();
    let b64 = kmsd::encoding::b64url(SECRET.as_bytes());
    for hay in [&jwks, &audit.to_string(), &out] {
        assert!(!hay.contains(SECRET) && !hay.contains(&b64), "secret leaked");
    }
}

#[tokio::test]
async fn a_sunset_that_came_due_while_down_happens_at_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());
    let m = M::start(tmp.path(), &env, None).await;
    let legacy = m.token().await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, v) = m.act("advance").await;
    assert_eq!(status, 200, "{v}");
    let sunset = ts(&v["sunsetAt"]);
    let legacy = long_lived(&legacy);
    assert_ne!(m.introspect(&legacy).await, Value::Null, "an unexpired HS256 token verifies before sunset");
    let admin = m.admin.clone();
    m.d.stop();
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    while now() <= sunset {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Restart with a reconcile tick an hour long: only the startup check can fire it.
    let policy = tmp.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap().replace("tick = \"1s\"", "tick = \"1h\"");
    std::fs::write(&policy, text).unwrap();
    let m = M::start(tmp.path(), &env, Some(admin)).await;
    assert_eq!(m.status().await["state"], "sunset");
    assert_eq!(m.introspect(&legacy).await, Value::Null);
}

#[tokio::test]
async fn an_operator_can_sunset_at_once_and_it_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());
    let m = M::start(tmp.path(), &env, None).await;
    let legacy = m.token().await;
    let (status, v) = m.act("sunset").await;
    assert_eq!((status, v["state"].as_str()), (200, Some("sunset")));
    assert_eq!(m.introspect(&legacy).await, Value::Null);
    assert_eq!(part(&m.token().await, 0)["alg"], "RS256");
    let (_, audit) = call(&m.d.admin, &m.admin, "GET", "/v1/admin/audit?limit=1000", None).await;
    assert!(audit["events"].as_array().unwrap().iter().any(|e| e["action"] == "migration.sunset_now"));
    let (status, v) = m.act("jump").await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")));
}

/// A refresh in phase `hs256` signs an HS256 access token too; the sunset
/// must wait for it like for any other (here it outlives the legacy cap).
#[tokio::test]
async fn an_hs256_token_minted_by_a_refresh_moves_the_sunset() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup_capped(tmp.path(), "1s");
    let m = M::start(tmp.path(), &env, None).await;
    let (status, pair) = call(&m.d.public, &m.admin, "POST", "/v1/tokens", Some(json!({ "identityId": m.id }))).await;
    assert_eq!(status, 201, "{pair}");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let body = json!({ "refreshToken": pair["refreshToken"] });
    let (status, refreshed) = call(&m.d.public, "", "POST", "/v1/tokens/refresh", Some(body)).await;
    assert_eq!(status, 200, "{refreshed}");
    let access = refreshed["accessToken"].as_str().unwrap();
    assert_eq!(part(access, 0)["alg"], "HS256");
    let refreshed_exp = part(access, 1)["exp"].as_i64().unwrap();
    let (status, v) = m.act("advance").await;
    assert_eq!(status, 200, "{v}");
    let cutover = ts(&v["cutoverAt"]);
    assert!(refreshed_exp > cutover + 1, "the refreshed token outlives the legacy cap");
    assert_eq!(ts(&v["sunsetAt"]), refreshed_exp + 1, "sunset_at = latest HS256 exp + skew");
}

/// The public revocation check during the cut-over: a jti kmsd never saw may
/// be a live legacy token while HS256 is accepted, and nothing HS256 stands
/// after the sunset.
#[tokio::test]
async fn the_revocation_check_follows_the_hs256_sunset() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());
    let m = M::start(tmp.path(), &env, None).await;
    let legacy = m.token().await;
    let jti = part(&legacy, 1)["jti"].as_str().unwrap().to_owned();
    let unseen = format!("tok_{}", kmsd::encoding::random_hex(16));
    assert!(!crate::revocation::revoked(&m.d.public, &jti).await, "kmsd's own HS256 token stands");
    assert!(!crate::revocation::revoked(&m.d.public, &unseen).await, "may be a legacy token kmsd never saw");
    let (status, v) = m.act("sunset").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(m.introspect(&legacy).await, Value::Null);
    assert!(crate::revocation::revoked(&m.d.public, &jti).await, "HS256 after sunset is refused");
    assert!(crate::revocation::revoked(&m.d.public, &unseen).await, "no legacy token stands after sunset");
}

/// A token the legacy system issued has no session in kmsd: revocation by
/// identity must still reach it (through the identity's epoch) while HS256
/// verifies, and so answers 204 even when kmsd holds no live session.
#[tokio::test]
async fn revoking_an_identity_reaches_legacy_tokens_that_have_no_session() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup_capped(tmp.path(), "1h");
    let m = M::start(tmp.path(), &env, None).await;
    let ours = m.token().await;
    let mut claims = part(&ours, 1);
    let iat = claims["iat"].as_i64().unwrap() - 10;
    claims["iat"] = json!(iat);
    claims["exp"] = json!(iat + 3600);
    claims["jti"] = json!("tok_legacy00000000000000000000000000");
    claims["sid"] = json!("sess_legacy0000000000000000000000000");
    let legacy = resign(&ours, &claims);
    let revoke = |body: Value| call(&m.d.public, &m.admin, "POST", "/v1/tokens/revoke", Some(body));
    assert_eq!(revoke(json!({ "sessionId": part(&ours, 1)["sid"] })).await.0, 204);
    assert_eq!(m.introspect(&ours).await, Value::Null);
    assert_eq!(m.introspect(&legacy).await["sub"], m.id.as_str(), "the legacy token verifies");
    let (status, v) = revoke(json!({ "identityId": m.id })).await;
    assert_eq!(status, 204, "a legacy token may be live: {v}");
    assert_eq!(m.introspect(&legacy).await, Value::Null, "the identity epoch revoked it");
}
