//! `/.well-known/agent-configuration` against relayauth's discovery JSON
//! schema (specs/well-known-agent-configuration.md, "Full JSON Schema"),
//! transcribed below as data with a validator for the keywords it uses, and
//! against the routes kmsd actually serves.

use serde_json::{json, Value};

use crate::daemon::{client, Daemon};

const BASE: &str = "https://auth.example.test";

/// relayauth's schema; `format: uri` is checked as an absolute http(s) URL.
/// `schema_version`'s pattern `^[0-9]+\.[0-9]+$` is checked by hand below.
fn relayauth_schema() -> Value {
    let string = json!({ "type": "string" });
    let boolean = json!({ "type": "boolean" });
    let uri = json!({ "type": "string", "format": "uri" });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    let depth = json!({ "type": ["integer", "null"], "minimum": 1 });
    let enum_list = |values: Value| json!({ "type": "array", "minItems": 1, "uniqueItems": true, "items": { "type": "string", "enum": values } });
    let object = |required: Value, properties: Value| json!({ "type": "object", "additionalProperties": false, "required": required, "properties": properties });
    let scope_format = object(
        json!(["pattern", "separator", "path_optional", "wildcard", "planes", "actions"]),
        json!({
            "pattern": { "type": "string", "const": "{plane}:{resource}:{action}:{path?}" },
            "separator": { "type": "string", "const": ":" },
            "path_optional": boolean,
            "wildcard": { "type": "string", "const": "*" },
            "planes": { "type": "array", "items": string, "minItems": 1, "uniqueItems": true },
            "actions": enum_list(json!(["read", "write", "create", "delete", "manage", "run", "send", "invoke", "*"])),
            "notes": strings,
        }),
    );
    let path_schema = object(
        json!(["type", "required", "wildcard_allowed", "description"]),
        json!({
            "type": { "type": "string", "enum": ["wildcard", "fs_path", "channel", "identifier", "constraint"] },
            "required": boolean,
            "wildcard_allowed": boolean,
            "description": string,
            "examples": strings,
        }),
    );
    let scope_definition = object(
        json!(["name", "plane", "resource", "pattern", "actions", "path_schema", "description", "examples"]),
        json!({
            "name": string, "plane": string, "resource": string, "pattern": string,
            "actions": { "type": "array", "items": string, "minItems": 1, "uniqueItems": true },
            "path_schema": path_schema,
            "description": string,
            "examples": { "type": "array", "items": string, "minItems": 1 },
        }),
    );
    let sponsor_chain = object(
        json!(["required", "propagated_in_tokens", "propagated_in_audit"]),
        json!({ "required": boolean, "propagated_in_tokens": boolean, "propagated_in_audit": boolean, "max_depth": depth }),
    );
    let scope_delegation = object(
        json!(["enabled", "mode", "escalation_policy"]),
        json!({
            "enabled": boolean,
            "mode": { "type": "string", "enum": ["intersection", "explicit_subset"] },
            "escalation_policy": { "type": "string", "enum": ["hard_error", "silent_deny", "audit_only"] },
            "max_depth": depth,
        }),
    );
    let mut limits = enum_list(json!(["maxActionsPerHour", "maxCostPerDay", "alertThreshold", "autoSuspend"]));
    limits.as_object_mut().unwrap().remove("minItems");
    let budgets = object(
        json!(["enabled", "supported_limits", "alert_webhook_supported", "auto_suspend_supported"]),
        json!({ "enabled": boolean, "supported_limits": limits, "alert_webhook_supported": boolean, "auto_suspend_supported": boolean }),
    );
    let token_lifetimes = object(
        json!(["access_token_default", "refresh_token_default", "maximum", "permanent_tokens_allowed"]),
        json!({ "access_token_default": string, "refresh_token_default": string, "maximum": string, "permanent_tokens_allowed": boolean }),
    );
    let endpoint = object(
        json!(["url", "methods", "auth", "description"]),
        json!({
            "url": uri,
            "methods": enum_list(json!(["GET", "POST", "PUT", "PATCH", "DELETE"])),
            "auth": { "type": "string", "enum": ["none", "bearer_token", "client_secret_post", "private_key_jwt"] },
            "description": string,
            "rate_limited": boolean,
        }),
    );
    let grant_types = enum_list(json!([
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:relayauth:params:oauth:grant-type:delegation"
    ]));
    let properties = json!({
        "schema_version": string,
        "service_name": { "type": "string", "minLength": 1 },
        "issuer": uri,
        "server_version": { "type": "string", "minLength": 1 },
        "documentation_url": uri,
        "jwks_uri": uri,
        "token_endpoint": uri,
        "identity_endpoint": uri,
        "scopes_endpoint": uri,
        "revocation_endpoint": uri,
        "introspection_endpoint": uri,
        "scope_templates_endpoint": uri,
        "capabilities": { "type": "array", "items": string, "uniqueItems": true },
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": enum_list(json!(["client_secret_post", "private_key_jwt", "bearer_token", "none"])),
        "token_signing_alg_values_supported": enum_list(json!(["RS256", "EdDSA"])),
        "scope_format": scope_format,
        "scope_definitions": { "type": "array", "minItems": 1, "items": scope_definition },
        "sponsor_required": boolean,
        "sponsor_chain": sponsor_chain,
        "scope_delegation": scope_delegation,
        "budgets": budgets,
        "token_lifetimes": token_lifetimes,
        "endpoints": { "type": "object", "additionalProperties": endpoint },
    });
    object(
        json!([
            "schema_version",
            "issuer",
            "jwks_uri",
            "token_endpoint",
            "identity_endpoint",
            "grant_types_supported",
            "token_endpoint_auth_methods_supported",
            "token_signing_alg_values_supported",
            "scope_format",
            "scope_definitions",
            "sponsor_required",
            "scope_delegation",
            "budgets",
            "token_lifetimes",
            "endpoints"
        ]),
        properties,
    )
}

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "null" => v.is_null(),
        other => panic!("schema type {other} not handled"),
    }
}

/// Every violation of `schema` by `v`, each with its JSON pointer.
fn violations(schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    let mut fail = |what: String| out.push(format!("{at}: {what}"));
    if let Some(t) = schema.get("type") {
        let names: Vec<&str> =
            t.as_array().map_or_else(|| vec![t.as_str().unwrap()], |a| a.iter().map(|x| x.as_str().unwrap()).collect());
        if !names.iter().any(|n| type_matches(n, v)) {
            return fail(format!("{v} is not of type {t}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            fail(format!("{v} is not one of {allowed:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            fail(format!("{v} is not {c}"));
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("uri") {
        let s = v.as_str().unwrap_or_default();
        if !(s.starts_with("https://") || s.starts_with("http://")) || s.contains(['{', '}', ' ']) {
            fail(format!("{s:?} is not an absolute URI"));
        }
    }
    if let (Some(min), Some(s)) = (schema.get("minLength").and_then(Value::as_u64), v.as_str()) {
        if (s.chars().count() as u64) < min {
            fail(format!("shorter than {min}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_i64), v.as_i64()) {
        if n < min {
            fail(format!("{n} is below {min}"));
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                fail(format!("fewer than {min} items"));
            }
        }
        if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
            if let Some(dup) = items.iter().enumerate().find(|(i, x)| items[..*i].contains(x)) {
                fail(format!("duplicate item {}", dup.1));
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                violations(item_schema, item, &format!("{at}/{i}"), out);
            }
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap()) {
                out.push(format!("{at}: required field {r} is missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, child) in obj {
            let path = format!("{at}/{k}");
            match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(s), _) => violations(s, child, &path, out),
                (None, Some(Value::Bool(false))) => out.push(format!("{path}: not allowed by the schema")),
                (None, Some(extra)) if extra.is_object() => violations(extra, child, &path, out),
                (None, _) => {}
            }
        }
    }
}

async fn discovery(d: &Daemon) -> Value {
    let resp = client().get(format!("{}/.well-known/agent-configuration", d.public)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

#[test]
fn the_schema_validator_catches_what_the_schema_forbids() {
    let schema = relayauth_schema();
    let mut found = Vec::new();
    let doc = json!({ "schema_version": 1, "extra": true, "endpoints": { "x": { "url": "/rel", "methods": [] } } });
    violations(&schema, &doc, "", &mut found);
    for expected in [
        "/schema_version: 1 is not of type",
        "/extra: not allowed",
        "required field \"issuer\"",
        "/endpoints/x/url: \"/rel\" is not an absolute URI",
        "/endpoints/x/methods: fewer than 1",
        "/endpoints/x: required field \"auth\"",
    ] {
        assert!(found.iter().any(|f| f.contains(expected)), "{expected} not reported in {found:#?}");
    }
}

#[tokio::test]
async fn discovery_validates_against_the_relayauth_schema_with_iso_lifetimes() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, "[tokens]\naccess_ttl_default = \"90s\"\nrefresh_ttl_max = \"7d\"\n").unwrap();
    let d =
        Daemon::start(tmp.path(), &[("KMSD_PUBLIC_BASE_URL", BASE), ("KMSD_POLICY_FILE", policy.to_str().unwrap())]);
    let body = discovery(&d).await;
    let mut found = Vec::new();
    violations(&relayauth_schema(), &body, "", &mut found);
    assert!(found.is_empty(), "the discovery document breaks relayauth's schema:\n{}", found.join("\n"));
    let version = body["schema_version"].as_str().unwrap();
    assert!(version
        .split_once('.')
        .is_some_and(|(a, b)| [a, b].iter().all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))));

    assert_eq!(
        body["token_lifetimes"],
        json!({ "access_token_default": "PT1M30S", "refresh_token_default": "P1D", "maximum": "P7D", "permanent_tokens_allowed": false }),
        "ISO-8601 durations; the maximum is the larger (refresh) cap, not the access cap"
    );
    assert_eq!(body["service_name"], "kmsd");
    assert_eq!(body["server_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["sponsor_chain"]["max_depth"], 10);
    assert_eq!(body["scope_delegation"]["max_depth"], 10);
    assert!(!body["capabilities"].as_array().unwrap().is_empty());
}

/// The default caps: access 24 h, refresh 30 days.
#[tokio::test]
async fn discovery_lifetimes_default_to_the_contract_values() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let lifetimes = discovery(&d).await["token_lifetimes"].clone();
    assert_eq!(
        (
            lifetimes["access_token_default"].as_str(),
            lifetimes["refresh_token_default"].as_str(),
            lifetimes["maximum"].as_str()
        ),
        (Some("PT1H"), Some("P1D"), Some("P30D"))
    );
}

/// Every route of the public listener (CONTRACT.md section 3, with `/v1/verify`).
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/v1/health"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/v1/keysets/{name}/jwks.json"),
    ("GET", "/.well-known/agent-configuration"),
    ("GET", "/.well-known/openid-configuration"),
    ("POST", "/v1/tokens"),
    ("POST", "/v1/tokens/refresh"),
    ("POST", "/v1/tokens/revoke"),
    ("GET", "/v1/tokens/introspect"),
    ("POST", "/v1/tokens/introspect"),
    ("POST", "/v1/tokens/validate"),
    ("GET", "/v1/tokens/revocation"),
    ("POST", "/v1/api-keys"),
    ("GET", "/v1/api-keys"),
    ("POST", "/v1/api-keys/{id}/revoke"),
    ("POST", "/v1/identities"),
    ("GET", "/v1/identities"),
    ("GET", "/v1/identities/{id}"),
    ("PATCH", "/v1/identities/{id}"),
    ("DELETE", "/v1/identities/{id}"),
    ("POST", "/v1/identities/{id}/suspend"),
    ("POST", "/v1/identities/{id}/retire"),
    ("POST", "/v1/identities/{id}/reactivate"),
    ("POST", "/v1/sign"),
    ("POST", "/v1/verify"),
];

/// Asserts that `method path` on `base` (path parameters filled with
/// placeholders) answers something other than 405 or 404 `not_found`.
pub async fn assert_served(base: &str, method: &str, path: &str, what: &str) {
    let path_filled = path.replace("{id}", "ak_x").replace("{name}", "sign").replace("{kid}", "k");
    let resp = client().request(method.parse().unwrap(), format!("{base}{path_filled}")).send().await.unwrap();
    let status = resp.status().as_u16();
    let code = resp.json::<Value>().await.ok().and_then(|v| v["code"].as_str().map(str::to_owned));
    assert!(
        status != 405 && code.as_deref() != Some("not_found"),
        "{method} {path} on {base} is {what} but not served ({status})"
    );
}

#[tokio::test]
async fn discovery_lists_every_public_route_and_only_routes_that_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[("KMSD_PUBLIC_BASE_URL", BASE)]);
    let body = discovery(&d).await;
    let mut listed = Vec::new();
    for (name, e) in body["endpoints"].as_object().unwrap() {
        let url = e["url"].as_str().unwrap();
        let path = url.strip_prefix(BASE).unwrap_or_else(|| panic!("{name}: {url} is not under the base URL"));
        for m in e["methods"].as_array().unwrap() {
            listed.push((
                m.as_str().unwrap().to_owned(),
                path.replace("%7Bid%7D", "{id}").replace("%7Bname%7D", "{name}"),
            ));
        }
    }
    for (method, path) in PUBLIC_ROUTES {
        assert!(
            listed.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is not in the discovery endpoints"
        );
    }
    for (method, path) in &listed {
        assert_served(&d.public, method, path, "listed").await;
    }
    for (field, path) in [
        ("jwks_uri", "/.well-known/jwks.json"),
        ("token_endpoint", "/v1/tokens"),
        ("identity_endpoint", "/v1/identities"),
        ("revocation_endpoint", "/v1/tokens/revoke"),
        ("introspection_endpoint", "/v1/tokens/introspect"),
    ] {
        assert_eq!(body[field], format!("{BASE}{path}"));
    }
}
