//! The native baseline: the reference workflow's steps as in-process Rust,
//! run by the same scheduler with the same HTTP client, claims and events,
//! no sandbox. Must not know wasmtime.

use crate::capabilities::http_client::HttpClient;
use crate::report::{EventRecord, HttpCallRecord};
use crate::scheduler::{AttemptContext, Compensation, StepExecutor, StepFailure};
use crate::store::{ClaimRequest, ClaimStore};
use crate::trace::SpanId;
use crate::workflow::StepSpec;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reference workflow's steps as plain Rust: the native baseline. Same
/// scheduler, same API calls (with `traceparent`), same claims and events,
/// no sandbox.
pub struct NativeExecutor {
    claims: Arc<dyn ClaimStore>,
    owner: String,
    /// The same pooled client the sandbox's outbound requests go through.
    client: Arc<HttpClient>,
}

impl NativeExecutor {
    pub fn new(claims: Arc<dyn ClaimStore>, owner: String) -> Result<Self, String> {
        Ok(NativeExecutor {
            claims,
            owner,
            client: Arc::new(HttpClient::new()?),
        })
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, StepFailure> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| StepFailure::Fatal(format!("input field `{name}` is missing")))
}

/// One HTTP/1.1 request through the pooled client (as the sandbox's steps send theirs).
async fn http(
    client: &Arc<HttpClient>,
    ctx: &AttemptContext,
    step: &StepSpec,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Value, StepFailure> {
    use http_body_util::{BodyExt, Full};
    let span = SpanId::random();
    let traceparent = ctx.trace.traceparent_for(span).to_string();
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| StepFailure::Fatal(format!("bad url {url}: {e}")))?;
    let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
    let started = Instant::now();
    // As the sandbox sends it for a step with `idempotency_key = true`.
    let idempotency = step
        .idempotency_header
        .as_ref()
        .map(|h| (h.clone(), ctx.idempotency_key("run")));
    let index = ctx.recorder.http_call(HttpCallRecord {
        step: step.name.clone(),
        attempt_span_id: ctx.trace.span_id.to_string(),
        span_id: span.to_string(),
        method: method.into(),
        url: url.into(),
        traceparent: Some(traceparent.clone()),
        idempotency_key: idempotency.as_ref().map(|(_, k)| k.clone()),
        status: None,
        error: None,
        start_ms: ctx.recorder.offset_ms(started),
        duration_ms: 0.0,
    });
    let retry = |e: &dyn std::fmt::Display| StepFailure::Retryable(format!("{url}: {e}"));
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", &authority)
        .header("traceparent", &traceparent);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some((name, key)) = &idempotency {
        req = req.header(name.as_str(), key.as_str());
    }
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    if !payload.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(
            Full::new(bytes::Bytes::from(payload))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| StepFailure::Fatal(e.to_string()))?;
    let (resp, _) = client.send(req, None).await.map_err(|e| retry(&e))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| retry(&e))?
        .to_bytes();
    ctx.recorder.http_call_done(
        index,
        Some(status),
        None,
        started.elapsed().as_secs_f64() * 1000.0,
    );
    if status != 200 {
        let msg = format!("{url}: HTTP {status}");
        return Err(if status >= 500 {
            StepFailure::Retryable(msg)
        } else {
            StepFailure::Fatal(msg)
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| StepFailure::Fatal(format!("{url}: {e}")))
}

fn event(ctx: &AttemptContext, name: &str) {
    ctx.recorder.event(EventRecord {
        kind: "event".into(),
        name: name.into(),
        level: "info".into(),
        message: String::new(),
        trace_id: ctx.trace.trace_id.to_string(),
        span_id: ctx.trace.span_id.to_string(),
        step: ctx.step.clone(),
        at_ms: 0.0,
        measurements: BTreeMap::new(),
        metadata: BTreeMap::new(),
    });
}

impl NativeExecutor {
    async fn step(
        &self,
        step: &StepSpec,
        ctx: &AttemptContext,
        input: Value,
    ) -> Result<Value, StepFailure> {
        let kind = step
            .component
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let base = input
            .get("api_base")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let out = match kind {
            // The minimal step: its input back, no host call.
            "noop" => return Ok(input),
            "authenticate" => {
                let user = field(&input, "user_id")?;
                let body = json!({ "client_id": "braid", "user_id": user });
                let token = http(
                    &self.client,
                    ctx,
                    step,
                    "POST",
                    &format!("{base}/oauth/token"),
                    None,
                    Some(body),
                )
                .await?;
                json!({ "access_token": token["access_token"], "user_id": user })
            }
            "fetch_profile" | "fetch_permissions" => {
                let what = if kind == "fetch_profile" {
                    "profile"
                } else {
                    "permissions"
                };
                let url = format!("{base}/users/{}/{what}", field(&input, "user_id")?);
                http(
                    &self.client,
                    ctx,
                    step,
                    "GET",
                    &url,
                    Some(field(&input, "token")?),
                    None,
                )
                .await?
            }
            "validate_access" | "policy_rbac" => {
                let (resource, action) = (field(&input, "resource")?, field(&input, "action")?);
                let grants = input
                    .pointer("/permissions/grants")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let ok = input.pointer("/profile/active") == Some(&Value::Bool(true))
                    && grants.iter().any(|g| {
                        let pattern = g["resource"].as_str().unwrap_or("");
                        let covers = pattern == "*"
                            || pattern == resource
                            || pattern
                                .strip_suffix("/*")
                                .is_some_and(|p| resource.starts_with(&format!("{p}/")));
                        covers
                            && g["actions"]
                                .as_array()
                                .is_some_and(|a| a.iter().any(|x| x == action || x == "*"))
                    });
                if !ok {
                    return Err(StepFailure::Fatal("denied by policy".into()));
                }
                json!({ "allowed": true, "reasons": ["grant matches"], "obligations": {} })
            }
            "claim_work" => {
                let claim = self
                    .claims
                    .claim(ClaimRequest {
                        work_item: field(&input, "work_item")?.to_string(),
                        lease: Duration::from_millis(input["lease_ms"].as_u64().unwrap_or(30_000)),
                        run_id: ctx.run_id.clone(),
                        trace_id: ctx.trace.trace_id.to_string(),
                        span_id: ctx.trace.span_id.to_string(),
                        step: step.name.clone(),
                        owner: self.owner.clone(),
                        metadata: "{}".into(),
                        workflow: ctx.workflow.clone(),
                    })
                    .await
                    .map_err(|e| StepFailure::Fatal(e.to_string()))?;
                json!({ "claim_id": claim.claim_id, "work_item": claim.work_item, "trace_id": claim.trace_id })
            }
            "aggregate" => json!({
                "trace_id": ctx.trace.trace_id.to_string(),
                "user": input.pointer("/profile/name"),
                "decision": input.get("decision"),
                "claim": input.get("claim"),
            }),
            other => {
                return Err(StepFailure::Host(format!(
                    "no native implementation of `{other}`"
                )));
            }
        };
        event(ctx, &format!("{kind}.done"));
        Ok(out)
    }
}

impl StepExecutor for NativeExecutor {
    fn component_of(&self, step: &str) -> (String, String) {
        (format!("native:{step}"), String::new())
    }

    fn is_reversible(&self, _step: &str) -> bool {
        false
    }

    async fn execute(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
    ) -> Result<String, StepFailure> {
        let input: Value =
            serde_json::from_str(&input).map_err(|e| StepFailure::Fatal(e.to_string()))?;
        match tokio::time::timeout(step.timeout, self.step(step, &ctx, input)).await {
            Ok(out) => out.map(|v| v.to_string()),
            Err(_) => Err(StepFailure::Timeout(step.timeout)),
        }
    }

    async fn compensate(
        &self,
        _: &StepSpec,
        _: AttemptContext,
        _: String,
        _: StepFailure,
    ) -> Result<Compensation, StepFailure> {
        Ok(Compensation::GiveUp)
    }

    async fn undo(
        &self,
        _: &StepSpec,
        _: AttemptContext,
        _: String,
        _: String,
    ) -> Result<(), StepFailure> {
        Ok(())
    }
}
