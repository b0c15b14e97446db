//! `braid bench --mode claims`: the claim store alone, claims and releases
//! per second and their latencies.
//!
//! Must not know wasmtime.

use crate::store::{ClaimRequest, ClaimStore};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One rung of the claim benchmark: `claimers` tasks claiming and releasing
/// work items as fast as the store answers.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimRung {
    pub store: String,
    pub claimers: usize,
    /// Distinct work items the claimers pick from (few: contended).
    pub items: usize,
    /// Claim calls made (granted or conflict).
    pub claims: usize,
    pub conflicts: usize,
    pub elapsed_s: f64,
    /// Claim calls per second (each granted claim is also released).
    pub claims_per_s: f64,
    pub claim_p50_us: f64,
    pub claim_p99_us: f64,
    pub release_p50_us: f64,
    pub release_p99_us: f64,
}

/// Runs one rung against `store`: every claimer makes `claims / claimers`
/// claim calls on random items out of `items`, releasing each it is granted.
pub async fn claim_rung(
    store: Arc<dyn ClaimStore>,
    label: &str,
    claimers: usize,
    claims: usize,
    items: usize,
) -> Result<ClaimRung, crate::store::ClaimStoreError> {
    let tag = hex::encode(rand::random::<[u8; 4]>());
    let per_claimer = claims.div_ceil(claimers.max(1));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..claimers.max(1) {
        let (store, tag) = (Arc::clone(&store), tag.clone());
        tasks.spawn(async move {
            let (mut claim_us, mut release_us, mut conflicts) = (Vec::new(), Vec::new(), 0);
            for n in 0..per_claimer {
                let item = rand::random::<u64>() % items.max(1) as u64;
                let request = ClaimRequest {
                    work_item: format!("bench-{tag}-{item}"),
                    lease: Duration::from_secs(30),
                    run_id: format!("run-{tag}-{c}-{n}"),
                    trace_id: hex::encode(rand::random::<[u8; 16]>()),
                    span_id: hex::encode(rand::random::<[u8; 8]>()),
                    step: "bench".into(),
                    owner: "bench:0".into(),
                    metadata: "{}".into(),
                    workflow: "bench".into(),
                };
                let run_id = request.run_id.clone();
                let t = Instant::now();
                let granted = store.claim(request).await;
                claim_us.push(t.elapsed().as_secs_f64() * 1e6);
                match granted {
                    Ok(claim) => {
                        let t = Instant::now();
                        store.release(&claim.claim_id, &run_id).await?;
                        release_us.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    Err(crate::store::ClaimStoreError::Conflict(_)) => conflicts += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok((claim_us, release_us, conflicts))
        });
    }
    let (mut claim_us, mut release_us, mut conflicts) = (Vec::new(), Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (c, r, n) =
            done.map_err(|e| crate::store::ClaimStoreError::Unavailable(e.to_string()))??;
        claim_us.extend(c);
        release_us.extend(r);
        conflicts += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(ClaimRung {
        store: label.to_string(),
        claimers,
        items,
        claims: claim_us.len(),
        conflicts,
        elapsed_s: elapsed,
        claims_per_s: claim_us.len() as f64 / elapsed.max(1e-9),
        claim_p50_us: pct(&mut claim_us, 0.5),
        claim_p99_us: pct(&mut claim_us, 0.99),
        release_p50_us: pct(&mut release_us, 0.5),
        release_p99_us: pct(&mut release_us, 0.99),
    })
}
