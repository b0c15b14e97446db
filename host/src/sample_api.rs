//! The bundled sample API: the token, profile and permissions endpoints the
//! reference workflow calls, with seed-like latencies, and a record of every
//! request's `traceparent` for tests and curious users.
//!
//! Endpoints:
//! - `POST /oauth/token` `{ "client_id": "braid", "user_id": "u-100" }` -> `{ "access_token", "token_type", "expires_in" }`;
//!   with an `Idempotency-Key` header, a repeat of the key gets the first
//!   answer again (the same token; header `idempotent-replayed: true`), and
//!   the key with another body gets 422 (the last [`MAX_IDEMPOTENCY_KEYS`] keys)
//! - `GET /users/{id}/profile` (bearer token for that user) -> profile
//! - `GET /users/{id}/permissions` (bearer token for that user) -> roles and grants
//! - `POST /oauth/revoke` `{ "token": "..." }` -> 200 (revoked) or 404 (unknown token)
//! - `POST /notifications` `{ "to", "subject", "about" }` (any issued bearer
//!   token) -> 202 `{ "id", "to" }`; one notification per `Idempotency-Key`
//! - `GET /_requests[?trace_id=...]` -> every request received, with its trace headers
//! - `DELETE /_requests` -> forget them; `GET /healthz` -> `ok`
//! - `POST /_faults` (a [`FaultRule`] as JSON), `GET /_faults`, `DELETE /_faults`
//!
//! Fault injection: a rule picks requests by endpoint (`token`, `revoke`,
//! `profile`, `permissions`, `notify` or `*`), optionally only those on one trace id, and
//! answers them with a status code, a delay (then the normal answer), or a
//! dropped connection; on every request, every Nth one, or with a probability;
//! after letting the first `skip` through and at most `times` times. Rules come
//! from `--fault` at start or `POST /_faults` at run time; a client can also
//! fault one request itself with an `x-braid-fault: status=503` header.

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

impl Latencies {
    /// The same latency for every endpoint.
    pub fn uniform(each: Duration) -> Self {
        Latencies {
            auth: each,
            profile: each,
            permissions: each,
        }
    }
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
    /// None while the request is still being answered.
    pub status: Option<u16>,
    /// Milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// The request's `Idempotency-Key` header, if it had one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Whether the answer was a replay of the key's first answer (nothing
    /// new was issued).
    #[serde(default)]
    pub replayed: bool,
}

/// One fault-injection rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// `token`, `revoke`, `profile`, `permissions`, `notify` or `*`.
    pub endpoint: String,
    /// Answer with this status code.
    #[serde(default)]
    pub status: Option<u16>,
    /// Wait this long, then answer (normally, or with `status`).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Drop the connection mid-response instead of answering.
    #[serde(default)]
    pub drop: bool,
    /// Fault every Nth matching request (default: every one).
    #[serde(default)]
    pub every: Option<u64>,
    /// Fault a matching request with this probability.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Only requests whose `traceparent` carries this trace id.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Let this many matching requests through first.
    #[serde(default)]
    pub skip: u64,
    /// Fault at most this many requests.
    #[serde(default)]
    pub times: Option<u64>,
    /// Matching requests seen so far.
    #[serde(default, skip_deserializing)]
    pub seen: u64,
    /// Requests faulted so far.
    #[serde(default, skip_deserializing)]
    pub applied: u64,
}

impl FaultRule {
    /// Parses `ENDPOINT:key=value,key=value` (keys: status, delay_ms, drop,
    /// every, probability, trace_id, skip, times), e.g. `profile:status=503,every=2`.
    pub fn parse(spec: &str) -> Result<FaultRule, String> {
        let (endpoint, params) = spec.split_once(':').unwrap_or((spec, ""));
        let mut rule = Self::parse_params(params)?;
        rule.endpoint = endpoint.to_string();
        if !ENDPOINTS.contains(&endpoint) {
            return Err(format!(
                "fault `{spec}`: unknown endpoint `{endpoint}` (token, revoke, profile, permissions, *)"
            ));
        }
        Ok(rule)
    }

    fn parse_params(params: &str) -> Result<FaultRule, String> {
        let mut rule = FaultRule::default();
        for kv in params.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
            let bad = |e: &dyn std::fmt::Display| format!("fault parameter `{kv}`: {e}");
            match k {
                "status" => rule.status = Some(v.parse().map_err(|e| bad(&e))?),
                "delay_ms" => rule.delay_ms = Some(v.parse().map_err(|e| bad(&e))?),
                "drop" => rule.drop = v.parse().map_err(|e| bad(&e))?,
                "every" => rule.every = Some(v.parse().map_err(|e| bad(&e))?),
                "probability" => rule.probability = Some(v.parse().map_err(|e| bad(&e))?),
                "trace_id" => rule.trace_id = Some(v.to_string()),
                "skip" => rule.skip = v.parse().map_err(|e| bad(&e))?,
                "times" => rule.times = Some(v.parse().map_err(|e| bad(&e))?),
                other => return Err(format!("unknown fault parameter `{other}`")),
            }
        }
        if rule.status.is_none() && rule.delay_ms.is_none() && !rule.drop {
            return Err("a fault needs `status`, `delay_ms` or `drop`".into());
        }
        Ok(rule)
    }

    /// Counts a matching request and says whether to fault it.
    fn fires(&mut self) -> bool {
        self.seen += 1;
        if self.seen <= self.skip || self.times.is_some_and(|t| self.applied >= t) {
            return false;
        }
        let nth = self
            .every
            .is_none_or(|n| n <= 1 || (self.seen - self.skip).is_multiple_of(n));
        let lucky = self.probability.is_none_or(|p| rand::random::<f64>() < p);
        let fire = nth && lucky;
        if fire {
            self.applied += 1;
        }
        fire
    }
}

/// What a fired fault does to a request.
struct FaultAction {
    status: Option<u16>,
    delay: Option<Duration>,
    drop: bool,
}

#[derive(Clone)]
struct AppState {
    latencies: Latencies,
    faults: Arc<Mutex<Vec<FaultRule>>>,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    /// Issued token -> user id.
    tokens: Arc<Mutex<HashMap<String, String>>>,
    /// `Idempotency-Key` -> the token request's body and answer.
    idempotency: Arc<Mutex<IdempotencyKeys>>,
    /// The notifications sent, newest last, at most [`MAX_NOTIFICATIONS`]:
    /// the demo's mailbox (`GET /_notifications`), where an approver finds
    /// the link a run sent.
    notifications: Arc<Mutex<std::collections::VecDeque<Value>>>,
}

/// How many notifications the sample API keeps (oldest forgotten first).
pub const MAX_NOTIFICATIONS: usize = 1000;

/// How many `Idempotency-Key`s the sample API remembers (oldest forgotten first).
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;

/// Remembered `Idempotency-Key`s, bounded by [`MAX_IDEMPOTENCY_KEYS`].
#[derive(Default)]
struct IdempotencyKeys {
    answers: HashMap<String, (Value, Value)>,
    order: std::collections::VecDeque<String>,
}

impl IdempotencyKeys {
    fn remember(&mut self, key: String, body: Value, answer: Value) {
        if self.order.len() >= MAX_IDEMPOTENCY_KEYS
            && let Some(oldest) = self.order.pop_front()
        {
            self.answers.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.answers.insert(key, (body, answer));
    }
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

/// Waits out an endpoint's latency; zero means no wait at all (a zero sleep
/// would still wait for the next timer tick, about a millisecond).
async fn latency(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

fn find_user(id: &str) -> Option<&'static User> {
    USERS.iter().find(|u| u.id == id)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The request's bearer token, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The request's `Idempotency-Key`, if it has one.
fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A key's first answer again, marked replayed.
fn replayed(status: StatusCode, answer: &Value) -> Response {
    let mut replay = (status, Json(answer.clone())).into_response();
    replay.headers_mut().insert(
        "idempotent-replayed",
        axum::http::HeaderValue::from_static("true"),
    );
    replay
}

/// Checks the bearer token was issued for `user_id`.
fn authorized(state: &AppState, headers: &HeaderMap, user_id: &str) -> bool {
    match (bearer(headers), state.tokens.lock()) {
        (Some(t), Ok(tokens)) => tokens.get(t).is_some_and(|u| u == user_id),
        _ => false,
    }
}

async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    latency(state.latencies.auth).await;
    let key = idempotency_key(&headers);
    // Check, issue and remember under one lock: two requests with one key
    // at the same moment still get one token.
    let Ok(mut keys) = state.idempotency.lock() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "idempotency table poisoned",
        );
    };
    if let Some(k) = &key
        && let Some((first_body, answer)) = keys.answers.get(k)
    {
        if *first_body != body {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used with a different body",
            );
        }
        return replayed(StatusCode::OK, answer);
    }
    let user_id = body.get("user_id").and_then(Value::as_str).unwrap_or("");
    let client_ok = body.get("client_id").and_then(Value::as_str) == Some("braid");
    let Some(user) = find_user(user_id).filter(|_| client_ok) else {
        return error(StatusCode::UNAUTHORIZED, "invalid client or user");
    };
    let token = format!("tok-{}", hex::encode(rand::random::<[u8; 12]>()));
    if let Ok(mut tokens) = state.tokens.lock() {
        tokens.insert(token.clone(), user.id.to_string());
    }
    let answer = json!({ "access_token": token, "token_type": "Bearer", "expires_in": 3600 });
    if let Some(k) = key {
        keys.remember(k, body, answer.clone());
    }
    Json(answer).into_response()
}

#[derive(Deserialize)]
struct RevokeBody {
    token: String,
}

async fn revoke(State(state): State<AppState>, Json(body): Json<RevokeBody>) -> Response {
    let removed = state
        .tokens
        .lock()
        .map(|mut t| t.remove(&body.token).is_some())
        .unwrap_or(false);
    if removed {
        Json(json!({ "revoked": true })).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "unknown token")
    }
}

/// `POST /notifications {"to", "subject", "message"}` with a bearer token
/// any user was issued: the notification is accepted (`202` and its id).
/// An `Idempotency-Key` seen before gets the first answer again, marked
/// replayed: one notification per key.
async fn notify(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    latency(state.latencies.profile).await;
    let known = match (bearer(&headers), state.tokens.lock()) {
        (Some(t), Ok(tokens)) => tokens.contains_key(t),
        _ => false,
    };
    if !known {
        return error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    }
    if body
        .get("to")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "`to` is required");
    }
    let key = idempotency_key(&headers);
    let Ok(mut keys) = state.idempotency.lock() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "idempotency table poisoned",
        );
    };
    if let Some(k) = &key
        && let Some((_, answer)) = keys.answers.get(k)
    {
        return replayed(StatusCode::ACCEPTED, answer);
    }
    let answer = json!({ "id": format!("ntf-{}", hex::encode(rand::random::<[u8; 6]>())), "to": body["to"] });
    if let Ok(mut sent) = state.notifications.lock() {
        if sent.len() >= MAX_NOTIFICATIONS {
            sent.pop_front();
        }
        let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
        sent.push_back(
            json!({ "id": answer["id"], "to": body["to"], "subject": body["subject"],
            "about": body["about"], "traceparent": traceparent }),
        );
    }
    if let Some(k) = key {
        keys.remember(k, body, answer.clone());
    }
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

/// `GET /_notifications`: the notifications sent, oldest first.
async fn list_notifications(State(state): State<AppState>) -> Response {
    let sent: Vec<Value> = state
        .notifications
        .lock()
        .map(|n| n.iter().cloned().collect())
        .unwrap_or_default();
    Json(sent).into_response()
}

const ENDPOINTS: [&str; 6] = ["token", "revoke", "profile", "permissions", "notify", "*"];

async fn add_fault(State(state): State<AppState>, Json(rule): Json<FaultRule>) -> Response {
    if !ENDPOINTS.contains(&rule.endpoint.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "unknown endpoint (token, revoke, profile, permissions, *)",
        );
    }
    if rule.status.is_none() && rule.delay_ms.is_none() && !rule.drop {
        return error(
            StatusCode::BAD_REQUEST,
            "a fault needs `status`, `delay_ms` or `drop`",
        );
    }
    if let Ok(mut f) = state.faults.lock() {
        f.push(rule);
    }
    StatusCode::CREATED.into_response()
}

async fn list_faults(State(state): State<AppState>) -> Response {
    Json(state.faults.lock().map(|f| f.clone()).unwrap_or_default()).into_response()
}

async fn clear_faults(State(state): State<AppState>) -> StatusCode {
    if let Ok(mut f) = state.faults.lock() {
        f.clear();
    }
    StatusCode::NO_CONTENT
}

fn endpoint_of(path: &str) -> &'static str {
    match path {
        "/oauth/token" => "token",
        "/oauth/revoke" => "revoke",
        p if p.ends_with("/profile") => "profile",
        p if p.ends_with("/permissions") => "permissions",
        "/notifications" => "notify",
        _ => "other",
    }
}

/// The first rule that fires for this request, if any (a request's own
/// `x-braid-fault` header comes first).
fn pick_fault(
    state: &AppState,
    endpoint: &str,
    trace_id: Option<&str>,
    header: Option<&str>,
) -> Option<FaultAction> {
    if let Some(spec) = header
        && let Ok(rule) = FaultRule::parse_params(spec)
    {
        return Some(FaultAction {
            status: rule.status,
            delay: rule.delay_ms.map(Duration::from_millis),
            drop: rule.drop,
        });
    }
    let mut faults = state.faults.lock().ok()?;
    faults
        .iter_mut()
        .filter(|r| r.endpoint == endpoint || r.endpoint == "*")
        .filter(|r| r.trace_id.as_deref().is_none_or(|t| Some(t) == trace_id))
        .find_map(|r| {
            r.fires().then(|| FaultAction {
                status: r.status,
                delay: r.delay_ms.map(Duration::from_millis),
                drop: r.drop,
            })
        })
}

/// A 200 whose body fails after the headers: the client sees the connection die.
fn dropped_connection() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<bytes::Bytes, std::io::Error>(std::io::Error::other(
            "injected fault: connection dropped",
        ))
    });
    Response::new(axum::body::Body::from_stream(failing))
}

async fn profile(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    latency(state.latencies.profile).await;
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
    latency(state.latencies.permissions).await;
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
    if path.starts_with("/_") || path == "/healthz" {
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
    let idempotency_key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let parsed = traceparent
        .as_deref()
        .and_then(|t| crate::trace::TraceParent::parse(t).ok());
    let received_at_ms = crate::store::now_ms();
    let fault_header = request
        .headers()
        .get("x-braid-fault")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let trace_id = parsed.map(|p| p.trace_id.to_string());
    let fault = pick_fault(
        &state,
        endpoint_of(&path),
        trace_id.as_deref(),
        fault_header.as_deref(),
    );
    // Recorded on arrival, so a request still hanging is visible too.
    let index = state.requests.lock().ok().map(|mut r| {
        r.push(RecordedRequest {
            method,
            path,
            traceparent,
            tracestate,
            trace_id,
            parent_id: parsed.map(|p| p.parent_id.to_string()),
            status: None,
            received_at_ms,
            finished_at_ms: None,
            idempotency_key,
            replayed: false,
        });
        r.len() - 1
    });
    let response = match fault {
        None => next.run(request).await,
        Some(f) => {
            if let Some(d) = f.delay {
                tokio::time::sleep(d).await;
            }
            if f.drop {
                dropped_connection()
            } else if let Some(code) = f.status {
                let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                error(code, "injected fault")
            } else {
                next.run(request).await
            }
        }
    };
    if let (Some(i), Ok(mut r)) = (index, state.requests.lock())
        && let Some(entry) = r.get_mut(i)
    {
        entry.status = Some(response.status().as_u16());
        entry.finished_at_ms = Some(crate::store::now_ms());
        entry.replayed = response.headers().contains_key("idempotent-replayed");
    }
    response
}

/// Every request the sample API has recorded; shared with an in-process
/// caller (the benchmark checks traces through it).
pub type RequestLog = Arc<Mutex<Vec<RecordedRequest>>>;

/// The sample API's routes, with fault rules to start with, and its request log.
pub fn router(latencies: Latencies, faults: Vec<FaultRule>) -> (Router, RequestLog) {
    let state = AppState {
        latencies,
        faults: Arc::new(Mutex::new(faults)),
        requests: Arc::new(Mutex::new(Vec::new())),
        tokens: Arc::new(Mutex::new(HashMap::new())),
        idempotency: Arc::new(Mutex::new(IdempotencyKeys::default())),
        notifications: Arc::new(Mutex::new(std::collections::VecDeque::new())),
    };
    let log = Arc::clone(&state.requests);
    let router = Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .route(
            "/_faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/users/{id}/profile", get(profile))
        .route("/users/{id}/permissions", get(permissions))
        .route("/notifications", post(notify))
        .route("/_requests", get(list_requests).delete(clear_requests))
        .route("/_notifications", get(list_notifications))
        .route("/healthz", get(|| async { "ok" }))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state);
    (router, log)
}

/// Binds `listen` (port 0 picks a free port) and returns the bound address,
/// the server future and the request log.
pub async fn bind(
    listen: SocketAddr,
    latencies: Latencies,
    faults: Vec<FaultRule>,
) -> std::io::Result<(
    SocketAddr,
    impl Future<Output = std::io::Result<()>>,
    RequestLog,
)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (app, log) = router(latencies, faults);
    Ok((addr, async move { axum::serve(listener, app).await }, log))
}

#[cfg(test)]
mod tests {
    use super::FaultRule;

    #[test]
    fn parses_fault_specs() {
        let r = FaultRule::parse("profile:status=503,every=2,skip=1").expect("valid");
        assert_eq!(
            (r.endpoint.as_str(), r.status, r.every, r.skip),
            ("profile", Some(503), Some(2), 1)
        );
        assert!(FaultRule::parse("token:drop").expect("valid").drop);
        assert!(FaultRule::parse("nope:status=500").is_err());
        assert!(
            FaultRule::parse("profile:every=2").is_err(),
            "a fault must do something"
        );
        assert!(FaultRule::parse("profile:colour=red").is_err());
    }

    #[test]
    fn every_skip_and_times_select_requests() {
        let mut r = FaultRule::parse("profile:status=503,every=2,skip=1,times=2").expect("valid");
        let fired: Vec<bool> = (0..8).map(|_| r.fires()).collect();
        // skip the 1st; then every 2nd of the rest; at most twice
        assert_eq!(
            fired,
            [false, false, true, false, true, false, false, false]
        );
    }
}
