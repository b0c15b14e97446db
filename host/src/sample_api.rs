//! The bundled sample API: the token, profile and permissions endpoints the
//! reference workflow calls, with seed-like latencies, and a record of every
//! request's `traceparent` for tests and curious users.
//!
//! Endpoints:
//! - `POST /oauth/token` `{ "client_id": "braid", "user_id": "u-100" }` -> `{ "access_token", "token_type", "expires_in" }`
//! - `GET /users/{id}/profile` (bearer token for that user) -> profile
//! - `GET /users/{id}/permissions` (bearer token for that user) -> roles and grants
//! - `GET /_requests[?trace_id=...]` -> every request received, with its trace headers
//! - `DELETE /_requests` -> forget them; `GET /healthz` -> `ok`

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Per-endpoint latency (the seed measured ~33, ~28 and ~35 ms).
#[derive(Debug, Clone, Copy)]
pub struct Latencies {
    pub auth: Duration,
    pub profile: Duration,
    pub permissions: Duration,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            auth: Duration::from_millis(33),
            profile: Duration::from_millis(28),
            permissions: Duration::from_millis(35),
        }
    }
}

/// One request as the sample API saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The trace id of `traceparent`, when it parses.
    pub trace_id: Option<String>,
    /// The `parent-id` of `traceparent`: the caller's span for this request.
    pub parent_id: Option<String>,
    pub status: u16,
    /// Milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    pub finished_at_ms: u64,
}

#[derive(Clone)]
struct AppState {
    latencies: Latencies,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    /// Issued token -> user id.
    tokens: Arc<Mutex<HashMap<String, String>>>,
}

struct User {
    id: &'static str,
    name: &'static str,
    email: &'static str,
    department: &'static str,
    active: bool,
    roles: &'static [&'static str],
    /// (resource pattern, actions)
    grants: &'static [(&'static str, &'static [&'static str])],
}

const USERS: &[User] = &[
    User {
        id: "u-100",
        name: "Ada Lovelace",
        email: "ada@example.com",
        department: "engineering",
        active: true,
        roles: &["engineer", "reports-reader"],
        grants: &[
            ("reports/*", &["read"]),
            ("projects/apollo", &["read", "write"]),
        ],
    },
    User {
        id: "u-200",
        name: "Grace Hopper",
        email: "grace@example.com",
        department: "operations",
        active: true,
        roles: &["admin"],
        grants: &[("*", &["*"])],
    },
    User {
        id: "u-300",
        name: "Mallory Byrne",
        email: "mallory@example.com",
        department: "contractors",
        active: true,
        roles: &["guest"],
        grants: &[("public/*", &["read"])],
    },
    User {
        id: "u-400",
        name: "Former Employee",
        email: "former@example.com",
        department: "none",
        active: false,
        roles: &[],
        grants: &[],
    },
];

fn find_user(id: &str) -> Option<&'static User> {
    USERS.iter().find(|u| u.id == id)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Checks the bearer token was issued for `user_id`.
fn authorized(state: &AppState, headers: &HeaderMap, user_id: &str) -> bool {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (token, state.tokens.lock()) {
        (Some(t), Ok(tokens)) => tokens.get(t).is_some_and(|u| u == user_id),
        _ => false,
    }
}

async fn token(State(state): State<AppState>, Json(body): Json<Value>) -> Response {
    tokio::time::sleep(state.latencies.auth).await;
    let user_id = body.get("user_id").and_then(Value::as_str).unwrap_or("");
    let client_ok = body.get("client_id").and_then(Value::as_str) == Some("braid");
    let Some(user) = find_user(user_id).filter(|_| client_ok) else {
        return error(StatusCode::UNAUTHORIZED, "invalid client or user");
    };
    let token = format!("tok-{}", hex::encode(rand::random::<[u8; 12]>()));
    if let Ok(mut tokens) = state.tokens.lock() {
        tokens.insert(token.clone(), user.id.to_string());
    }
    Json(json!({ "access_token": token, "token_type": "Bearer", "expires_in": 3600 }))
        .into_response()
}

async fn profile(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    tokio::time::sleep(state.latencies.profile).await;
    if !authorized(&state, &headers, &id) {
        return error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    }
    let Some(u) = find_user(&id) else {
        return error(StatusCode::NOT_FOUND, "no such user");
    };
    Json(json!({
        "id": u.id, "name": u.name, "email": u.email, "department": u.department, "active": u.active,
    }))
    .into_response()
}

async fn permissions(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    tokio::time::sleep(state.latencies.permissions).await;
    if !authorized(&state, &headers, &id) {
        return error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    }
    let Some(u) = find_user(&id) else {
        return error(StatusCode::NOT_FOUND, "no such user");
    };
    let grants: Vec<Value> = u
        .grants
        .iter()
        .map(|(resource, actions)| json!({ "resource": resource, "actions": actions }))
        .collect();
    Json(json!({ "user_id": u.id, "roles": u.roles, "grants": grants })).into_response()
}

#[derive(Deserialize)]
struct RequestsQuery {
    trace_id: Option<String>,
}

async fn list_requests(State(state): State<AppState>, Query(q): Query<RequestsQuery>) -> Response {
    let all = state.requests.lock().map(|r| r.clone()).unwrap_or_default();
    let list: Vec<RecordedRequest> = all
        .into_iter()
        .filter(|r| {
            q.trace_id
                .as_ref()
                .is_none_or(|t| r.trace_id.as_ref() == Some(t))
        })
        .collect();
    Json(list).into_response()
}

async fn clear_requests(State(state): State<AppState>) -> StatusCode {
    if let Ok(mut r) = state.requests.lock() {
        r.clear();
    }
    StatusCode::NO_CONTENT
}

/// Records every API request (not the `/_requests` inspection calls).
async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path.starts_with("/_requests") || path == "/healthz" {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let (traceparent, tracestate) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (header("traceparent"), header("tracestate"))
    };
    let parsed = traceparent
        .as_deref()
        .and_then(|t| crate::trace::TraceParent::parse(t).ok());
    let received_at_ms = crate::store::now_ms();
    let response = next.run(request).await;
    let entry = RecordedRequest {
        method,
        path,
        traceparent,
        tracestate,
        trace_id: parsed.map(|p| p.trace_id.to_string()),
        parent_id: parsed.map(|p| p.parent_id.to_string()),
        status: response.status().as_u16(),
        received_at_ms,
        finished_at_ms: crate::store::now_ms(),
    };
    if let Ok(mut r) = state.requests.lock() {
        r.push(entry);
    }
    response
}

/// The sample API's routes.
pub fn router(latencies: Latencies) -> Router {
    let state = AppState {
        latencies,
        requests: Arc::new(Mutex::new(Vec::new())),
        tokens: Arc::new(Mutex::new(HashMap::new())),
    };
    Router::new()
        .route("/oauth/token", post(token))
        .route("/users/{id}/profile", get(profile))
        .route("/users/{id}/permissions", get(permissions))
        .route("/_requests", get(list_requests).delete(clear_requests))
        .route("/healthz", get(|| async { "ok" }))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Binds `listen` (port 0 picks a free port) and returns the bound address
/// and the server future.
pub async fn bind(
    listen: SocketAddr,
    latencies: Latencies,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(latencies);
    Ok((addr, async move { axum::serve(listener, app).await }))
}
