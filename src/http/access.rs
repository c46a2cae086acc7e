//! The edge of every request: its id (`x-request-id`: the caller's, if it
//! sent a sane one, else a fresh `req_` + 32 hex, on every response), the
//! [`crate::context`] the rest of kmsd sees, the HTTP metrics, and one
//! info-level access-log line.
//!
//! Only the route template is ever recorded (`/v1/identities/{id}`, or
//! `unmatched`), never the raw path or query: a query may hold a token, and
//! raw paths would make metric labels unbounded. The actor is an API key id
//! or identity id, never a credential.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::auth_limit::Listener;
use crate::context::{self, RequestContext};
use crate::encoding::random_hex;
use crate::metrics::{HttpLabels, RouteLabels};

const HEADER: &str = "x-request-id";

/// The id of the request being served, or empty outside one.
pub fn current() -> String {
    context::current().map(|c| c.id.clone()).unwrap_or_default()
}

fn acceptable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| s.to_owned())
}

/// A method as a label: the standard ones, else `other` (bounded).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::CONNECT, "CONNECT"),
    ];
    KNOWN.iter().find(|(k, _)| k == m).map_or("other", |(_, s)| s)
}

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = req.headers().get(HEADER).and_then(acceptable).unwrap_or_else(|| format!("req_{}", random_hex(16)));
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let listener = req.extensions().get::<Listener>().copied().unwrap_or(Listener::Public).as_str();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = method_label(req.method()).to_owned();
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let ctx = RequestContext::new(id.clone(), client);
    let started = Instant::now();
    let served = context::scope(ctx.clone(), tracing::Instrument::instrument(next.run(req), span.clone()));
    let mut resp = served.await;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let m = &state.metrics;
    m.http_requests.get_or_create(&HttpLabels { listener, method: method.clone(), route: route.clone(), status }).inc();
    m.http_duration
        .get_or_create(&RouteLabels { listener, method: method.clone(), route: route.clone() })
        .observe(took.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            listener,
            method = %method,
            route = %route,
            status,
            duration_ms = took.as_secs_f64() * 1000.0,
            request_id = %id,
            client = %client.map(|c| c.to_string()).unwrap_or_default(),
            actor = ctx.actor().unwrap_or(""),
            "access"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}
