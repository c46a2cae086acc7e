//! Introspection with the token out of the URL (RFC 7662 `POST`, JSON or
//! form body), the `GET` kept for relayauth clients, and no log line that
//! records a query string or a token, even at `KMSD_LOG=debug`.

use serde_json::{json, Value};

use crate::api_keys::create_key;
use crate::daemon::client;
use crate::tokens::start;

#[tokio::test]
async fn introspection_takes_the_token_in_a_post_body_and_no_log_line_records_it() {
    let e = start(&[("KMSD_LOG", "debug")]);
    let id = e.identity("introspected", &["relayfile:fs:read:/a/*"]).await;
    let (status, p) = e.issue(&e.admin, json!({ "identityId": id })).await;
    assert_eq!(status, 201, "{p}");
    let token = p["accessToken"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/tokens/introspect", e.d.public);

    let by_get = e.introspect(&token).await;
    assert_eq!(by_get["sub"], id.as_str(), "{by_get}");
    let post = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    let json_body = client().post(&url).header("x-api-key", &e.admin).json(&json!({ "token": token }));
    assert_eq!(post(json_body).await, (200, by_get.clone()), "JSON body");
    let form = client()
        .post(&url)
        .header("x-api-key", &e.admin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&token_type_hint=access_token"));
    assert_eq!(post(form).await, (200, by_get.clone()), "form body");
    let junk = client().post(&url).header("x-api-key", &e.admin).json(&json!({ "token": "a.b.c" }));
    assert_eq!(post(junk).await, (200, Value::Null));
    let (status, v) = post(client().post(&url).header("x-api-key", &e.admin).json(&json!({}))).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")), "{v}");
    let (status, v) = post(
        client().post(&url).header("x-api-key", &e.admin).header("content-type", "application/x-www-form-urlencoded"),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")), "{v}");
    let (_, narrow) = create_key(&e.d.public, &e.admin, &["relayauth:identity:read:*"]).await;
    let narrow = narrow["key"].as_str().unwrap();
    let (status, v) = post(client().post(&url).header("x-api-key", narrow).json(&json!({ "token": token }))).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("insufficient_scope")), "{v}");
    // A bearer and a failing GET also go through the request span.
    let resp = client().get(format!("{url}?token={token}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403, "an access token without token:read");

    let (_, out) = e.d.stop();
    assert!(out.contains("kmsd::http::access: access"), "access log lines were written: {out}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!out.contains(signature), "a token reached the log:\n{out}");
    assert!(!out.contains("token="), "a query string reached the log:\n{out}");
}
