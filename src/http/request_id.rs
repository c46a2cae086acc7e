//! `x-request-id` on every response: the caller's, if it sent a sane one, else
//! a fresh `req_` + 32 hex. Error bodies read the id from a task-local set here.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::encoding::random_hex;

const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, or empty outside one.
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

fn acceptable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| s.to_owned())
}

pub async fn layer(req: Request, next: Next) -> Response {
    let id = req.headers().get(HEADER).and_then(acceptable).unwrap_or_else(|| format!("req_{}", random_hex(16)));
    let span = tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let started = std::time::Instant::now();
    let mut resp = REQUEST_ID.scope(id.clone(), tracing::Instrument::instrument(next.run(req), span.clone())).await;
    span.in_scope(|| {
        tracing::debug!(status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64, "served")
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}
