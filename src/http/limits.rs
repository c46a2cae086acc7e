//! Per-request limits, applied before a handler runs (inside the request-id
//! layer, so every refusal is our JSON error with a request id):
//! - a declared body (`Content-Length`) over `http.body_limit_bytes` gets 413
//!   `payload_too_large` before the body is read, so an `Expect:
//!   100-continue` request is refused without `100 Continue` (hyper sends it
//!   only when the body is first read);
//! - at most `http.max_in_flight` requests run at once per listener (each
//!   router has its own bound); beyond it, 503 `overloaded` with
//!   `Retry-After` at once, never a queue;
//! - a request has `http.request_timeout` to produce its response: 408
//!   `request_timeout` if the handler was waiting for the client's body, else
//!   503 `deadline_exceeded`. The handler is dropped, as when a client
//!   disconnects.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use tokio::sync::Semaphore;

use super::{ApiError, ErrorCode};
use crate::listener::ConnectionLimits;

#[derive(Clone)]
pub(super) struct RequestLimits {
    in_flight: Arc<Semaphore>,
    body_limit: u64,
    timeout: Duration,
}

impl RequestLimits {
    /// A fresh in-flight bound: call once per listener.
    pub(super) fn new(body_limit: usize, limits: &ConnectionLimits) -> Self {
        RequestLimits {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            body_limit: u64::try_from(body_limit).unwrap_or(u64::MAX),
            timeout: limits.request_timeout,
        }
    }
}

pub(super) async fn layer(State(limits): State<RequestLimits>, req: Request, next: Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.body_limit) {
        return closing(ApiError::payload_too_large());
    }
    let Ok(_slot) = limits.in_flight.clone().try_acquire_owned() else {
        return ApiError::new(ErrorCode::Overloaded, "too many requests in flight; retry later")
            .with("retryAfter", 1)
            .into_response();
    };
    let waiting = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| Body::new(WatchedBody { inner, waiting: waiting.clone() }));
    match tokio::time::timeout(limits.timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) if waiting.load(Ordering::Relaxed) => closing(ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {}s", limits.timeout.as_secs()),
        )),
        Err(_) => {
            tracing::warn!(timeout_secs = limits.timeout.as_secs(), "request deadline exceeded");
            ApiError::new(ErrorCode::DeadlineExceeded, "the request took too long; retry later")
                .with("retryAfter", 1)
                .into_response()
        }
    }
}

/// The error, and the connection closed after it: the body was not read.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The request body, recording whether its reader is waiting for the client.
struct WatchedBody {
    inner: Body,
    waiting: Arc<AtomicBool>,
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.waiting.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use axum::Router;
    use tower::ServiceExt;

    /// A body whose client never sends anything.
    struct Stalled;

    impl HttpBody for Stalled {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
            Poll::Pending
        }
    }

    fn router(max_in_flight: usize) -> Router {
        let limits =
            ConnectionLimits { max_in_flight, request_timeout: Duration::from_secs(30), ..ConnectionLimits::default() };
        Router::new()
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(3600)).await }))
            .route("/echo", post(|body: Bytes| async move { body }))
            .layer(axum::middleware::from_fn_with_state(RequestLimits::new(1024, &limits), layer))
    }

    async fn send(router: &Router, req: Request) -> (StatusCode, Option<String>, serde_json::Value) {
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let retry = resp.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, retry, serde_json::from_slice(&body).unwrap_or_default())
    }

    fn post_stalled(length: u64) -> Request {
        Request::post("/echo").header("content-length", length).body(Body::new(Stalled)).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_gets_503_and_a_stalled_body_408_at_the_deadline() {
        let r = router(8);
        let started = tokio::time::Instant::now();
        let (status, retry, body) = send(&r, Request::get("/slow").body(Body::empty()).unwrap()).await;
        assert_eq!(
            (status, retry.as_deref(), &body["code"]),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"), &"deadline_exceeded".into())
        );
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let (status, _, body) = send(&r, post_stalled(10)).await;
        assert_eq!((status, &body["code"]), (StatusCode::REQUEST_TIMEOUT, &"request_timeout".into()));
        let echoed = r.clone().oneshot(Request::post("/echo").body(Body::from("hi")).unwrap()).await.unwrap();
        assert_eq!(echoed.status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
        // The body never arrives: reading it would hang until the deadline.
        let (status, _, body) = send(&router(8), post_stalled(1025)).await;
        assert_eq!((status, &body["code"]), (StatusCode::PAYLOAD_TOO_LARGE, &"payload_too_large".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_in_flight_bound_requests_get_503_at_once_and_a_slot_frees_when_one_ends() {
        let r = router(1);
        let held = tokio::spawn(r.clone().oneshot(post_stalled(10)));
        tokio::task::yield_now().await;
        let (status, retry, body) = send(&r, Request::get("/slow").body(Body::empty()).unwrap()).await;
        assert_eq!(
            (status, retry.as_deref(), &body["code"]),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"), &"overloaded".into())
        );
        held.abort();
        let _ = held.await;
        let echoed = r.clone().oneshot(Request::post("/echo").body(Body::from("hi")).unwrap()).await.unwrap();
        assert_eq!(echoed.status(), StatusCode::OK);
    }
}
