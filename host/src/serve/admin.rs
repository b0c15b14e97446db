//! The admin endpoints of `braid serve`: `PUT /v1/components/NAME` (a
//! hot swap) and its rollback, for callers with the admin token.
//!
//! Must not know wasmtime (the registry loads and swaps).

use super::{Inner, error, header_str, read_body};
use crate::registry::SwapError;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Checks `Authorization: Bearer <admin token>`.
/// The refusal, if the caller is not the admin.
fn refuse_unless_admin(app: &Inner, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &app.admin_token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "component changes over HTTP are disabled: start braid serve with --admin-token (or BRAID_ADMIN_TOKEN)",
        ));
    };
    let given = header_str(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    // Compare without an early exit on the first differing byte.
    let ok = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer ...)",
        ))
    }
}

fn swap_answer(result: Result<crate::registry::SwapOutcome, SwapError>) -> Response {
    match result {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(e) => {
            let status = match &e {
                SwapError::Unknown(..) => StatusCode::NOT_FOUND,
                SwapError::Ambiguous(..) | SwapError::NoPrevious(_) => StatusCode::CONFLICT,
                SwapError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                SwapError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
    }
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
    let bytes = match read_body(body, app.max_component_bytes, "component").await {
        Ok(b) => b.to_vec(),
        Err(too_large) => return *too_large,
    };
    swap_answer(app.live.install(&name, bytes, "upload", true).await)
}

pub(super) async fn rollback_component(
    State(app): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = refuse_unless_admin(&app, &headers) {
        return denied;
    }
    swap_answer(app.live.rollback(&name).await)
}
