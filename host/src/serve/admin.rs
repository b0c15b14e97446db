//! The admin endpoints of `braid serve`: `PUT /v1/components/NAME` (a
//! hot swap) and its rollback, for callers with the admin token.
//!
//! Must not know wasmtime (the registry loads and swaps).

use super::{Inner, error, header_str};
use crate::registry::{Staged, SwapError};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Uploads received at once; one more gets 503 (each is staged to disk, then
/// installed one at a time).
pub(super) const MAX_UPLOADS_AT_ONCE: usize = 4;

/// Whether two secrets are equal, compared without an early exit on the
/// first differing byte.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks `Authorization: Bearer <admin token>`.
/// The refusal, if the caller is not the admin.
pub(super) fn refuse_unless_admin(app: &Inner, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &app.admin_token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "admin endpoints (component changes, cancel, resume, abort) are disabled: start braid serve with --admin-token (or BRAID_ADMIN_TOKEN)",
        ));
    };
    let given = header_str(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same_secret(g, token)) {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer ...)",
        ))
    }
}

/// The answer to a swap. Paths on the server's disk are not the caller's
/// business: an I/O failure is logged with its path and answered without it,
/// and a refused version's reason names "the upload", not the file it was
/// staged in.
fn swap_answer(app: &Inner, result: Result<crate::registry::SwapOutcome, SwapError>) -> Response {
    match result {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(e) => {
            let status = match &e {
                SwapError::Unknown(..) => StatusCode::NOT_FOUND,
                SwapError::Ambiguous(..) | SwapError::NoPrevious(_) => StatusCode::CONFLICT,
                SwapError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                SwapError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let message = match &e {
                SwapError::Io { name, source, .. } => {
                    tracing::error!("{e}");
                    format!(
                        "component `{name}`: the server could not store it ({}); see its log",
                        source.kind()
                    )
                }
                _ => app.live.without_paths(&e.to_string()),
            };
            error(status, message)
        }
    }
}

/// Reads and drops a body, at most `limit` bytes of it.
async fn drain(mut body: Body, limit: usize) {
    let mut seen = 0usize;
    while seen <= limit
        && let Some(Ok(frame)) = body.frame().await
    {
        seen += frame.data_ref().map_or(0, |d| d.len());
    }
}

/// Streams an upload into a staging file, hashing it as it goes: at most
/// `limit` bytes (413 past it, the file removed), never the whole body in
/// memory.
async fn stage_upload(app: &Inner, body: Body) -> Result<Staged, Response> {
    let limit = app.max_component_bytes;
    let failed = |e: std::io::Error| {
        tracing::error!("staging an upload failed: {e}");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the server could not stage the upload ({}); see its log",
                e.kind()
            ),
        )
    };
    let (path, file) = app.live.staging_file().map_err(failed)?;
    // Removed on every way out but an install.
    let mut staged = Staged::new(path, String::new(), 0);
    let mut file = tokio::fs::File::from_std(file);
    let mut hash = Sha256::new();
    let mut body = body;
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("reading the upload failed: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > limit as u64 {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("component larger than {limit} bytes"),
            ));
        }
        hash.update(&data);
        file.write_all(&data).await.map_err(failed)?;
    }
    file.flush().await.map_err(failed)?;
    drop(file);
    staged.set_content(hex::encode(hash.finalize()), size);
    Ok(staged)
}

pub(super) async fn upload_component(
    State(app): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(denied) = refuse_unless_admin(&app, &headers) {
        return denied;
    }
    let Ok(_slot) = app.uploads.try_acquire() else {
        // Read (and drop) what the client sends first, up to the size
        // limit: closing on an unread body can reset the connection before
        // the client reads the answer.
        drain(body, app.max_component_bytes).await;
        let mut busy = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_UPLOADS_AT_ONCE} uploads are being received already; try again later"),
        );
        busy.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return busy;
    };
    let staged = match stage_upload(&app, body).await {
        Ok(staged) => staged,
        Err(refused) => return refused,
    };
    let answer = app.live.install_staged(&name, staged, "upload", true).await;
    swap_answer(&app, answer)
}

pub(super) async fn rollback_component(
    State(app): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = refuse_unless_admin(&app, &headers) {
        return denied;
    }
    let answer = app.live.rollback(&name).await;
    swap_answer(&app, answer)
}
