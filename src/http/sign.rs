//! `POST /v1/sign` and `POST /v1/verify`: raw signatures with a keyset's
//! active key, for consumers that are not JWT verifiers. Scope
//! `relayauth:sign:invoke:<keyset>`.
//!
//! Only keysets declared `use = "sign"`: a token keyset is refused (403
//! `keyset_not_signable`) before its key is touched, since a raw signature by
//! a token key over a JWT signing input the caller wrote is a forged token.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::json::ApiJson;
use super::{ApiError, AppState, Caller, ErrorCode};
use crate::encoding::{b64url, b64url_decode};
use crate::keys::KeyUse;
use crate::keys::KeysetName;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/sign", post(sign)).route("/v1/verify", post(verify))
}

fn scope_for(keyset: &str) -> String {
    format!("relayauth:sign:invoke:{keyset}")
}

/// The declared `sign` keyset `name`: 404 if there is none, 403 if it is a
/// token keyset.
fn keyset(state: &AppState, name: &str) -> Result<KeysetName, ApiError> {
    let ks = KeysetName::parse(name)
        .ok()
        .and_then(|k| state.config.keyset(&k))
        .ok_or_else(|| ApiError::new(ErrorCode::KeysetNotFound, format!("no keyset named {name:?}")))?;
    if ks.usage != KeyUse::Sign {
        return Err(ApiError::new(
            ErrorCode::KeysetNotSignable,
            format!("keyset {name} signs tokens; raw signing needs a keyset declared use = \"sign\""),
        )
        .with("keyset", name));
    }
    Ok(ks.name.clone())
}

fn decode(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    b64url_decode(text).map_err(|_| ApiError::invalid_request(format!("{field} must be base64url")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    keyset: String,
    message: String,
}

async fn sign(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<SignBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&scope_for(&b.keyset))?;
    let ks = keyset(&state, &b.keyset)?;
    let message = decode("message", &b.message)?;
    let key = state
        .ring
        .active(&ks, state.clock.now())
        .ok_or_else(|| ApiError::unavailable(&format!("keyset {ks} has no active key"), 5))?;
    let sig = state.ring.sign(&key, &message).await?;
    Ok(Json(json!({ "kid": key.kid.as_str(), "alg": key.algorithm().as_str(), "signature": b64url(&sig) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    keyset: String,
    kid: String,
    message: String,
    signature: String,
}

async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<VerifyBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&scope_for(&b.keyset))?;
    let ks = keyset(&state, &b.keyset)?;
    let (message, signature) = (decode("message", &b.message)?, decode("signature", &b.signature)?);
    let now = state.clock.now();
    let valid = state
        .ring
        .record(&b.kid)
        .filter(|k| k.keyset == ks && k.state_at(now).is_published())
        .is_some_and(|k| k.public.verify(&message, &signature));
    Ok(Json(json!({ "valid": valid })))
}
