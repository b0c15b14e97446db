//! `braid run`: runs a workflow once and prints its step tree (or its report).

use super::host::{open_host, recover, recovered_line};
use super::{Exit, StateArgs, bad_input, read_input};
use braid::report::RunReport;
use braid::scheduler::{RunRequest, Scheduler};
use braid::trace::IncomingTrace;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct RunArgs {
    /// The workflow definition (TOML).
    workflow: PathBuf,
    /// The run's input: a JSON object, or @FILE to read it from a file.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Continue this W3C trace (an invalid value starts a new trace; given
    /// more than once, like a repeated header, it is invalid too).
    #[arg(long)]
    traceparent: Vec<String>,
    /// Vendor trace state to forward (ignored without a valid --traceparent);
    /// given more than once, the values are combined in order, as repeated
    /// header fields are.
    #[arg(long)]
    tracestate: Vec<String>,
    /// Print the run report as JSON instead of the tree.
    #[arg(long)]
    json: bool,
    /// Most step attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
    #[command(flatten)]
    state: StateArgs,
}

pub async fn exec(args: RunArgs) -> Result<u8, Exit> {
    let RunArgs {
        workflow,
        input,
        traceparent,
        tracestate,
        json,
        max_concurrency,
        state,
    } = args;
    let state = &state;
    let input = read_input(&input).map_err(bad_input)?;
    let host = open_host(state).await?;
    let (workflow, executor) =
        braid::check::load_and_prepare(&workflow, Arc::clone(&host.sandbox)).map_err(bad_input)?;
    // Runs left behind by a host that died are carried on (or undone)
    // before new work starts.
    for r in recover(&host, state, max_concurrency).await? {
        eprintln!("{}", recovered_line(&r));
    }
    let otel = braid::otel::OtlpExport::from_env(opentelemetry::trace::SpanKind::Internal)
        .map_err(bad_input)?;
    let mut scheduler = Scheduler::new(Arc::new(executor), max_concurrency)
        .with_journal(Arc::clone(&host.journal), host.owner.clone())
        // `braid run` holds its one run to the end, waits included.
        .without_parking()
        .with_local_runs(host.local.clone())
        .with_claims(Arc::clone(&host.claims));
    if let Some(otel) = &otel {
        // Each attempt's span goes out as the attempt ends.
        scheduler = scheduler.with_attempt_sink(otel.live_sink());
    }
    let trace = IncomingTrace::from_fields(&traceparent, &tracestate);
    let report = scheduler
        .run(RunRequest {
            workflow,
            input,
            trace,
        })
        .await
        .map_err(|e| match e {
            braid::scheduler::RunError::Input(_) => bad_input(anyhow::anyhow!("{e}")),
            other => Exit(1, other.into()),
        })?;
    if let Some(otel) = otel {
        otel.export(&report);
        otel.shutdown(Duration::from_secs(10)).await;
    }
    let mut out = std::io::stdout().lock();
    let printed = if json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        print_tree(&mut out, &report)
    };
    printed.map_err(|e| Exit(1, e.into()))?;
    if report.outcome == "succeeded" {
        Ok(0)
    } else if report.outcome == "suspended" {
        if !json {
            eprintln!(
                "run {} suspended (trace {}): {}\n  it waits in the state directory: `braid runs resume {}` (after fixing the step) or `braid runs abort {}`; a `braid serve` on this state directory carries it on",
                report.run_id,
                report.trace_id,
                report.error.as_deref().unwrap_or("a step failed"),
                report.run_id,
                report.run_id,
            );
        }
        Ok(3)
    } else {
        if !json {
            eprintln!(
                "error: run {} {} (trace {}): {}",
                report.run_id,
                report.outcome,
                report.trace_id,
                report.error.as_deref().unwrap_or("unknown reason")
            );
        }
        Ok(1)
    }
}

/// The human view of a run: one line per step, like the seed's.
fn print_tree(out: &mut impl Write, r: &RunReport) -> std::io::Result<()> {
    let origin = if r.continued_trace {
        "continued"
    } else {
        "new"
    };
    writeln!(out, "workflow {}  run {}", r.workflow, r.run_id)?;
    writeln!(
        out,
        "trace {} ({origin} trace, run span {})",
        r.trace_id, r.span_id
    )?;
    let width = r.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for (i, s) in r.steps.iter().enumerate() {
        let branch = if i + 1 == r.steps.len() {
            "└──"
        } else {
            "├──"
        };
        let mark = match s.outcome.as_str() {
            "succeeded" => "ok",
            "failed" => "FAILED",
            "compensated" => "COMPENSATED",
            "cancelled" => "CANCELLED",
            other => other,
        };
        // A map's and a compose step's span is their own, not an attempt's.
        let span = s
            .map
            .as_ref()
            .map(|m| m.span_id.as_str())
            .or(s.compose.as_ref().map(|c| c.span_id.as_str()))
            .or(s.attempts.last().map(|a| a.span_id.as_str()))
            .unwrap_or("-");
        let retries = if s.attempts.len() > 1 {
            format!("  {} attempts", s.attempts.len())
        } else {
            String::new()
        };
        let mut note = if s.parallel_with.is_empty() {
            String::new()
        } else {
            format!("  (parallel with {})", s.parallel_with.join(", "))
        };
        if let Some(m) = &s.map {
            note = format!(
                "  [map: {} elements, {} failed, {} reused]{note}",
                m.elements, m.failed, m.reused
            );
        }
        if let Some(c) = &s.compose {
            note = format!("  [compose {}]", c.workflow);
        }
        if let Some(why) = &s.skipped_because {
            note = format!("  ({why})");
        }
        writeln!(
            out,
            "{branch} {:<width$}  {:>8.2} ms  {mark:<11}  span {span}{retries}{note}",
            s.name, s.duration_ms
        )?;
        let pipe = if i + 1 == r.steps.len() { " " } else { "│" };
        for c in &s.compensations {
            writeln!(
                out,
                "{pipe}       compensate after `{}`: {}",
                c.failure, c.decision
            )?;
        }
        if let Some(e) = &s.error {
            writeln!(out, "{pipe}       {e}")?;
        }
    }
    for u in &r.undo {
        let n = u.attempts.len();
        let error = u
            .error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        writeln!(
            out,
            "undo {} ({n} attempt{}): {}{error}",
            u.step,
            if n == 1 { "" } else { "s" },
            u.outcome
        )?;
    }
    if !r.released_claims.is_empty() {
        writeln!(out, "released claims: {}", r.released_claims.join(", "))?;
    }
    let foreign = r.events.iter().filter(|e| e.trace_id != r.trace_id).count()
        + r.http_calls
            .iter()
            .filter(|c| {
                c.traceparent
                    .as_ref()
                    .is_some_and(|t| !t.contains(&r.trace_id))
            })
            .count();
    let claims = r
        .events
        .iter()
        .filter(|e| e.name == "claim.granted")
        .count();
    writeln!(
        out,
        "total {:.2} ms  {}{}  {} API calls, {} claim{}, {} events: {}",
        r.duration_ms,
        r.outcome,
        if r.degraded { " (degraded)" } else { "" },
        r.http_calls.len(),
        claims,
        if claims == 1 { "" } else { "s" },
        r.events.len(),
        if foreign == 0 {
            format!("all on trace {}", r.trace_id)
        } else {
            format!("{foreign} NOT on this trace")
        }
    )?;
    if let Some(result) = &r.result {
        let pretty = serde_json::to_string_pretty(result).map_err(std::io::Error::other)?;
        writeln!(out, "result: {pretty}")?;
    }
    Ok(())
}
