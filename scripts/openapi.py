#!/usr/bin/env python3
"""Writes docs/openapi.json (OpenAPI 3.1) for both kmsd listeners.

The error-code enum is read from src/http/code.rs (the `error_codes!` table);
the routes, bodies and responses are written out below by hand. The unit
test in src/http/openapi.rs and tests/api/openapi.rs check the result against
the code: rerun `python3 scripts/openapi.py` after changing a route or a code.
"""
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CODES = re.findall(r'^\s+\w+ => "([a-z_]+)", \w+, ', (ROOT / "src/http/code.rs").read_text(), re.M)

def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}

def obj(props, required=(), extra=True):
    s = {"type": "object", "properties": props}
    if required:
        s["required"] = list(required)
    if not extra:
        s["additionalProperties"] = False
    return s

STR = {"type": "string"}
STRS = {"type": "array", "items": STR}
TIME = {"type": "string", "description": "ISO-8601 UTC timestamp"}
ANY = {"type": "object"}

def json_body(schema, required=True):
    return {"required": required, "content": {"application/json": {"schema": schema}}}

def ok(schema, status="200", desc="OK", media="application/json"):
    return {status: {"description": desc, "content": {media: {"schema": schema}}}}

NO_CONTENT = {"204": {"description": "Done; no body"}}
AUTH = [{"bearer": []}, {"apiKey": []}]
PAGE = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}},
    {"name": "cursor", "in": "query", "schema": STR},
]

def op(tag, summary, responses, body=None, auth=True, params=()):
    o = {"tags": [tag], "summary": summary, "responses": {**responses, "default": {
        "description": "An error: the body is an ApiError with a stable code",
        "content": {"application/json": {"schema": ref("ApiError")}}}}}
    if body is not None:
        o["requestBody"] = body
    if params:
        o["parameters"] = list(params)
    o["security"] = AUTH if auth else []
    return o

def path_param(name, example=None):
    p = {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    if example:
        p["example"] = example
    return p

HEALTH = {
    "/health": {"get": op("health", "Liveness: the process answers", ok(ANY), auth=False)},
    "/v1/health": {"get": op("health", "Readiness: store and key backends answer",
                             {**ok(ANY), **ok(ANY, "503", "Unhealthy (same body)")}, auth=False)},
    "/livez": {"get": op("health", "Liveness probe: 200 while the process serves HTTP", ok(ANY), auth=False)},
    "/readyz": {"get": op("health", "Readiness probe: the store, the vault and every signer",
                          {**ok(ANY), **ok(ANY, "503", "Not ready: the body names what is missing")}, auth=False)},
}
API_KEYS = {
    "/v1/api-keys": {
        "post": op("api-keys", "Create an API key (the secret is shown once)",
                   ok(obj({"apiKey": ref("ApiKey"), "key": STR}, ["apiKey", "key"]), "201", "Created"),
                   json_body(obj({"name": STR, "scopes": STRS, "expiresAt": TIME}, ["name", "scopes"], extra=False))),
        "get": op("api-keys", "List the caller's org's API keys",
                  ok(obj({"data": {"type": "array", "items": ref("ApiKey")}, "pagination": ref("Pagination")})),
                  params=PAGE),
    },
    "/v1/api-keys/{id}/revoke": {
        "parameters": [path_param("id")],
        "post": op("api-keys", "Revoke an API key (again: a no-op)", ok(ref("ApiKey"))),
    },
}
ID_LINK = {"parameters": {"id": "$response.body#/id"}}
CREATED_IDENTITY = ok(ref("Identity"), "201", "Created")
CREATED_IDENTITY["201"]["links"] = {
    **{f"{v}Identity": {"operationId": f"{v}Identity", **ID_LINK} for v in ("get", "patch", "delete")},
    **{f"{t}Identity": {"operationId": f"{t}Identity", **ID_LINK} for t in ("suspend", "retire", "reactivate")},
    "issueToken": {"operationId": "issueToken", "requestBody": {"identityId": "$response.body#/id"}},
}
IDENTITY_BODY = {"name": STR, "type": STR, "scopes": STRS, "roles": STRS, "metadata": {"type": "object"},
                 "workspaceId": STR}
PUBLIC = {
    **HEALTH,
    "/.well-known/jwks.json": {"get": op("discovery", "Published verification keys (JWKS)",
                                         ok(obj({"keys": {"type": "array", "items": ANY}}, ["keys"])), auth=False)},
    "/v1/keysets/{name}/jwks.json": {
        "parameters": [path_param("name", "sign")],
        "get": op("discovery", "Published verification keys of one keyset",
                  ok(obj({"keys": {"type": "array", "items": ANY}}, ["keys"])), auth=False)},
    "/.well-known/agent-configuration": {"get": op("discovery", "kmsd's discovery document", ok(ANY), auth=False)},
    "/.well-known/openid-configuration": {"get": op("discovery", "OIDC discovery document",
                                                    ok(obj({"issuer": STR, "jwks_uri": STR}, ["issuer", "jwks_uri"])),
                                                    auth=False)},
    "/v1/tokens": {"post": op("tokens", "Issue an access and refresh token pair for an identity",
                              ok(ref("TokenPair"), "201", "Issued"),
                              json_body(obj({"identityId": STR, "scopes": STRS, "audience": STRS,
                                             "expiresIn": {"type": "integer", "minimum": 1},
                                             "refreshTokenTtlSeconds": {"type": "integer", "minimum": 1},
                                             "algorithm": STR}, ["identityId"])))},
    "/v1/tokens/refresh": {"post": op("tokens", "Exchange a refresh token for a new pair (rotating it)",
                                      ok(ref("TokenPair")), json_body(obj({"refreshToken": STR}, ["refreshToken"])),
                                      auth=False)},
    "/v1/tokens/revoke": {"post": op("tokens", "Revoke by token id, identity or session (exactly one)", NO_CONTENT,
                                     json_body(obj({"tokenId": STR, "identityId": STR, "sessionId": STR})))},
    "/v1/tokens/introspect": {
        "get": op("tokens", "Introspect a token given in the query (prefer POST)",
                  ok({"type": ["object", "null"]}), params=[{"name": "token", "in": "query", "required": True,
                                                             "schema": STR}]),
        "post": op("tokens", "Introspect a token: its claims, or null when it does not verify",
                   ok({"type": ["object", "null"]}),
                   {"required": True, "content": {
                       "application/json": {"schema": obj({"token": STR}, ["token"])},
                       "application/x-www-form-urlencoded": {"schema": obj({"token": STR}, ["token"])}}}),
    },
    "/v1/tokens/validate": {"post": op("tokens", "Validate an access token, optionally against required scopes",
                                       ok(obj({"valid": {"type": "boolean"}}, ["valid"])),
                                       json_body(obj({"token": STR, "requiredScopes": STRS}, ["token"])))},
    "/v1/tokens/revocation": {"get": op("tokens", "Whether kmsd refuses the token of this jti",
                                        ok(obj({"revoked": {"type": "boolean"}}, ["revoked"])), auth=False,
                                        params=[{"name": "jti", "in": "query", "required": True, "schema": STR}])},
    **API_KEYS,
    "/v1/identities": {
        "post": op("identities", "Create an identity", CREATED_IDENTITY,
                   json_body(obj({**IDENTITY_BODY, "sponsorId": STR}, ["name"]))),
        "get": op("identities", "List the org's identities", ok(obj({"data": {"type": "array", "items": ref("Identity")},
                                                                    "pagination": ref("Pagination")})),
                  params=PAGE + [{"name": n, "in": "query", "schema": STR} for n in ("status", "type", "workspaceId")]),
    },
    "/v1/identities/{id}": {
        "parameters": [path_param("id")],
        "get": op("identities", "Fetch an identity", ok(ref("Identity"))),
        "patch": op("identities", "Change an identity's fields", ok(ref("Identity")),
                    json_body(obj(IDENTITY_BODY, extra=False))),
        "delete": op("identities", "Delete an identity (needs X-Confirm-Delete: true)", NO_CONTENT,
                     params=[{"name": "X-Confirm-Delete", "in": "header", "required": True,
                              "schema": {"type": "string", "enum": ["true"]}}]),
    },
    **{f"/v1/identities/{{id}}/{t}": {
        "parameters": [path_param("id")],
        "post": op("identities", f"Lifecycle: {t}", ok(ref("Identity")),
                   json_body(obj({"reason": STR}), required=False)),
    } for t in ("suspend", "retire", "reactivate")},
    "/v1/sign": {"post": op("signing", "Sign a base64url message with a signing keyset's active key",
                            ok(obj({"kid": STR, "signature": STR})),
                            json_body(obj({"keyset": {"type": "string", "examples": ["sign"]}, "message": STR},
                                          ["keyset", "message"], extra=False)))},
    "/v1/verify": {"post": op("signing", "Verify a signature made by /v1/sign",
                              ok(obj({"valid": {"type": "boolean"}})),
                              json_body(obj({"keyset": STR, "kid": STR, "message": STR, "signature": STR},
                                            ["keyset", "kid", "message", "signature"], extra=False)))},
}
KEYSET_BODY = json_body(obj({"keyset": STR}), required=False)
ADMIN = {
    **HEALTH,
    "/metrics": {"get": op("admin", "Prometheus metrics (OpenMetrics text)", ok(STR, media="application/openmetrics-text"), auth=False)},
    "/v1/admin/keys": {"get": op("admin", "Every key version and its lifecycle", ok(obj({"keys": {"type": "array"}})))},
    "/v1/admin/audit": {"get": op("admin", "Audit entries with seq > after, oldest first",
                                  ok(obj({"events": {"type": "array"}, "next": {}})),
                                  params=[{"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                                          {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}])},
    "/v1/admin/audit/verify": {"get": op("admin", "Recompute the whole audit hash chain",
                                         ok(obj({"intact": {"type": "boolean"}}, ["intact"])))},
    "/v1/admin/keys/rotate": {"post": op("admin", "Stage a successor key (default keyset unless given)", ok(ANY),
                                         KEYSET_BODY)},
    "/v1/admin/keys/rollback": {"post": op("admin", "Return to the previous, still-published key", ok(ANY),
                                           KEYSET_BODY)},
    "/v1/admin/keys/{kid}/revoke": {"parameters": [path_param("kid")],
                                    "post": op("admin", "Revoke a key version at once", ok(ANY))},
    "/v1/admin/rotation/pause": {"post": op("admin", "Pause scheduled rotation", ok(ANY))},
    "/v1/admin/rotation/resume": {"post": op("admin", "Resume scheduled rotation", ok(ANY))},
    "/v1/admin/rotation/plan": {"get": op("admin", "The rotation schedule's next steps", ok(ANY))},
    "/v1/admin/migration": {
        "get": op("admin", "HS256 migration state", ok(ANY)),
        "post": op("admin", "Take an HS256 migration step", ok(ANY), json_body(obj({"action": STR}, ["action"]))),
    },
    "/v1/admin/backup": {"get": op("admin", "A consistent online snapshot of the store (redb file)",
                                   ok({"type": "string", "contentMediaType": "application/octet-stream"},
                                      media="application/octet-stream"))},
    **API_KEYS,
}
OPENAPI = {"get": op("discovery", "This OpenAPI document", ok(ANY), auth=False)}

def on(listener, paths):
    out = {}
    for p, item in paths.items():
        item = json.loads(json.dumps(item))
        for m, o in item.items():
            if isinstance(o, dict) and "tags" in o:
                o["tags"].append(f"{listener} listener")
        out[p] = item
    return out

shared = set(PUBLIC) & set(ADMIN)
paths = {**on("admin", {p: v for p, v in ADMIN.items() if p not in shared}),
         **on("public", {p: v for p, v in PUBLIC.items()}),
         "/openapi.json": {"get": OPENAPI["get"]}}
for p in sorted(shared) + ["/openapi.json"]:
    for o in paths[p].values():
        if isinstance(o, dict) and "tags" in o:
            o["tags"] = [t for t in o["tags"] if not t.endswith(" listener")] + ["public listener", "admin listener"]

# The operations the links of POST /v1/identities point to.
OPERATION_IDS = {
    ("get", "/v1/identities/{id}"): "getIdentity",
    ("patch", "/v1/identities/{id}"): "patchIdentity",
    ("delete", "/v1/identities/{id}"): "deleteIdentity",
    **{("post", f"/v1/identities/{{id}}/{t}"): f"{t}Identity" for t in ("suspend", "retire", "reactivate")},
    ("post", "/v1/tokens"): "issueToken",
}
for (m, p), oid in OPERATION_IDS.items():
    paths[p][m]["operationId"] = oid

doc = {
    "openapi": "3.1.0",
    "info": {"title": "kmsd", "version": "1",
             "description": "kmsd's two listeners. Each operation names its listener in a tag "
                            "(`public listener`, `admin listener`); operations served on both carry both tags. Every "
                            "error is an ApiError whose `code` is one of a stable set."},
    "servers": [{"url": "http://127.0.0.1:8787", "description": "the public listener"},
                {"url": "http://127.0.0.1:8788", "description": "the admin listener (loopback by default)"}],
    "paths": dict(sorted(paths.items())),
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                       "description": "An access token issued by kmsd"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                       "description": "An API key `rak_...`"},
        },
        "schemas": {
            "ErrorCode": {"type": "string", "enum": CODES},
            "ApiError": obj({"error": ref("ErrorCode"), "code": ref("ErrorCode"), "message": STR,
                             "requestId": STR}, ["error", "code", "message", "requestId"]),
            "Pagination": obj({"cursor": {"type": ["string", "null"]}, "hasMore": {"type": "boolean"},
                               "limit": {"type": "integer"}}),
            "ApiKey": obj({"id": STR, "orgId": STR, "prefix": STR, "name": STR, "scopes": STRS,
                           "createdAt": TIME, "revoked": {"type": "boolean"}, "revokedAt": TIME,
                           "lastUsedAt": TIME, "expiresAt": TIME}, ["id", "name", "scopes", "revoked"]),
            "Identity": obj({"id": STR, "name": STR, "type": STR, "status": STR, "scopes": STRS, "roles": STRS},
                            ["id", "name"]),
            "TokenPair": obj({"accessToken": STR, "refreshToken": STR, "accessTokenExpiresAt": TIME,
                              "refreshTokenExpiresAt": TIME, "tokenType": {"const": "Bearer"},
                              "clamped": {"type": "array"}},
                             ["accessToken", "refreshToken", "tokenType"]),
        },
    },
}
(ROOT / "docs/openapi.json").write_text(json.dumps(doc, indent=2) + "\n")
