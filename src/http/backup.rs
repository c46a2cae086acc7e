//! `GET /v1/admin/backup` (admin listener, `relayauth:admin:manage:*`): a
//! consistent copy of the live store, streamed as a redb file that opens
//! without repair (`kmsd backup --to FILE` saves it; `kmsd restore` puts it
//! back). The copy holds sealed private keys and API-key hashes but no KEK:
//! it is as sensitive as the store itself. Each backup is audited, and the
//! audit entry is inside the copy.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiError, AppState, Caller, ErrorCode};
use crate::audit::{AuditAction, AuditEvent};
use crate::storage::StorageError;

/// The row count of the copy, for the CLI's summary.
pub const ROWS_HEADER: &str = "x-kmsd-backup-rows";

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/admin/backup", get(backup))
}

async fn backup(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require("relayauth:admin:manage:*")?;
    if state.store.is_shared() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "an online backup file is a redb store; back up a PostgreSQL store with its own tools (pg_dump)",
        ));
    }
    let (now, actor) = (state.clock.now(), caller.id.clone());
    state
        .store
        .write(move |w| w.audit(AuditEvent::new(now, actor, AuditAction::StoreBackup)).map(drop))
        .await
        .map_err(|e: StorageError| ApiError::unavailable(&e, 5))?;
    let tmp = state.config.data_dir.join(format!(".backup-{}.redb", crate::encoding::random_hex(8)));
    let rows = state.store.backup_to(tmp.clone()).await.map_err(|e| ApiError::unavailable(&e, 5))?;
    let opened = tokio::fs::File::open(&tmp).await;
    // Unlinked at once: the open descriptor streams it, and nothing is left
    // behind in the data dir if the client goes away.
    let _ = std::fs::remove_file(&tmp);
    let file = opened.map_err(|e| ApiError::internal(&e))?;
    let len = file.metadata().await.map_err(|e| ApiError::internal(&e))?.len();
    tracing::info!(rows, bytes = len, actor = %caller.id, "store backup streamed");
    let mut resp = Body::new(FileBody { file, buf: vec![0; 64 * 1024].into_boxed_slice() }).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(ROWS_HEADER, HeaderValue::from(rows));
    Ok(resp)
}

/// A file as a response body, read in 64 KiB chunks.
struct FileBody {
    file: tokio::fs::File,
    buf: Box<[u8]>,
}

impl hyper::body::Body for FileBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let mut buf = tokio::io::ReadBuf::new(&mut this.buf);
        match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut this.file), cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(buf.filled())))))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}
