//! Opening what commands need: the claim store and run journal `--store`
//! names, and the sandbox over them ([`Host`]).

use super::{Exit, StateArgs, bad_input};
use braid::db::Durability;
use braid::journal::{RunJournal, SqliteJournal};
use braid::sandbox::{Sandbox, SandboxConfig};
use braid::store::{ClaimStore, SqliteClaimStore};
use std::path::Path;
use std::sync::Arc;

/// What a command that runs steps needs: the sandbox and the stores.
pub struct Host {
    pub sandbox: Arc<Sandbox>,
    pub claims: Arc<dyn ClaimStore>,
    pub journal: Arc<dyn RunJournal>,
    pub owner: String,
    /// How recovery tells a run's host is gone (by the kind of store).
    pub liveness: braid::recovery::Liveness,
    /// The runs this host is executing (recovery leaves them alone).
    pub local: braid::journal::LocalRuns,
}

impl Host {
    /// Recovery for this host: resumed runs take their component versions
    /// from `state_dir`'s history if swapped since, and make at most
    /// `max_concurrency` step calls at once.
    pub fn recoverer(
        &self,
        state_dir: &Path,
        max_concurrency: usize,
    ) -> braid::recovery::Recoverer {
        braid::recovery::Recoverer {
            sandbox: Arc::clone(&self.sandbox),
            journal: Arc::clone(&self.journal),
            claims: Arc::clone(&self.claims),
            owner: self.owner.clone(),
            liveness: self.liveness,
            local: self.local.clone(),
            history_dir: Some(state_dir.join("component-history")),
            max_concurrency,
            on_resumed: None,
            live: None,
        }
    }
}

/// One line on what recovery did with a run, for the terminal.
pub fn recovered_line(r: &braid::recovery::RecoveredRun) -> String {
    match r.action {
        "resumed" => format!(
            "resumed run {} (trace {}) left by {}: {}{}",
            r.run_id,
            r.trace_id,
            r.previous_owner,
            r.outcome,
            r.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
        _ => {
            let undone: Vec<String> = r
                .undo
                .iter()
                .map(|u| format!("{} {}", u.step, u.outcome))
                .collect();
            format!(
                "aborted run {} (trace {}) left by {}: undo [{}], released claims [{}]",
                r.run_id,
                r.trace_id,
                r.previous_owner,
                undone.join(", "),
                r.released_claims.join(", ")
            )
        }
    }
}

/// Connections to PostgreSQL a host keeps at most (`--store postgres://`).
const PG_CONNECTIONS: usize = 16;

/// What `--store` names.
pub enum StoreKind<'a> {
    /// SQLite files in the state directory (one machine).
    Sqlite,
    /// One PostgreSQL database shared by several hosts.
    Postgres(&'a str),
}

impl StateArgs {
    pub fn store_kind(&self) -> Result<StoreKind<'_>, Exit> {
        match self.store.trim() {
            "sqlite" => Ok(StoreKind::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreKind::Postgres(url))
            }
            other => Err(bad_input(anyhow::anyhow!(
                "--store (or BRAID_STORE) `{}`: expected `sqlite` or a postgres:// URL",
                braid::postgres::redact(other)
            ))),
        }
    }
}

/// The claim store and run journal `--store` names.
pub struct Stores {
    pub claims: Arc<dyn ClaimStore>,
    pub journal: Arc<dyn RunJournal>,
    /// Where they are, for messages (a PostgreSQL password is hidden).
    pub shown: String,
    /// How recovery tells a run's host is gone, by the kind of store.
    pub liveness: braid::recovery::Liveness,
}

/// The SQLite claim store and journal in `dir`.
fn open_sqlite_stores(dir: &Path, durability: Durability) -> Result<Stores, Exit> {
    let claims = SqliteClaimStore::open_with(dir, durability).map_err(bad_input)?;
    let journal = SqliteJournal::open_with(dir, durability).map_err(bad_input)?;
    Ok(Stores {
        shown: claims.path().display().to_string(),
        claims: Arc::new(claims),
        journal: Arc::new(journal),
        liveness: braid::recovery::Liveness::ThisMachine,
    })
}

pub async fn open_stores(state: &StateArgs) -> Result<Stores, Exit> {
    let durability = Durability::from(state.durability);
    let url = match state.store_kind()? {
        StoreKind::Sqlite => return open_sqlite_stores(&state.state_dir, durability),
        StoreKind::Postgres(url) => url,
    };
    let pg = braid::postgres::PgPool::open_with(url, PG_CONNECTIONS, durability)
        .await
        .map_err(|e| match e {
            braid::postgres::PostgresError::BadUrl { .. } => bad_input(e),
            other => Exit(1, other.into()),
        })?;
    Ok(Stores {
        shown: pg.shown_url().to_string(),
        claims: Arc::new(braid::postgres::PostgresClaimStore::new(pg.clone())),
        journal: Arc::new(braid::postgres::PostgresJournal::new(pg)),
        liveness: braid::recovery::Liveness::LeasesOnly,
    })
}

/// [`open_host_with`] on the stores `--store` names.
pub async fn open_host(state: &StateArgs) -> Result<Host, Exit> {
    open_host_with(state, open_stores(state).await?)
}

/// The sandbox alone, for commands that only load components (check,
/// inspect, policy eval): they never claim or journal, so no store is opened
/// (nothing is written but the compiled-component cache, `--no-cache` to
/// skip it), and a claim, were one made, is refused.
pub fn open_sandbox(state: &StateArgs) -> Result<Arc<Sandbox>, Exit> {
    let sandbox = Sandbox::new(sandbox_config(state), Arc::new(braid::store::NoClaims))
        .map_err(|e| Exit(2, e.into()))?;
    Ok(Arc::new(sandbox))
}

fn sandbox_config(state: &StateArgs) -> SandboxConfig {
    SandboxConfig {
        cache_dir: state.cache_dir(),
        fuel: state.fuel,
        deny_private_networks: state.deny_private_networks,
        ceilings: braid::capabilities::budget::BudgetLimits {
            log_records: state.max_step_log_records,
            log_bytes: state.max_step_log_bytes,
            refusals: state.max_step_refusals,
            host_log_lines: state.max_step_host_log_lines,
        },
        ..SandboxConfig::default()
    }
}

fn open_host_with(state: &StateArgs, stores: Stores) -> Result<Host, Exit> {
    let Stores {
        claims,
        journal,
        liveness,
        ..
    } = stores;
    let config = sandbox_config(state);
    let owner = config.host_id.clone();
    let sandbox = Sandbox::new(config, Arc::clone(&claims)).map_err(|e| Exit(2, e.into()))?;
    Ok(Host {
        sandbox: Arc::new(sandbox),
        claims,
        journal,
        owner,
        liveness,
        local: braid::journal::LocalRuns::default(),
    })
}

pub async fn recover(
    host: &Host,
    state: &StateArgs,
    max_concurrency: usize,
) -> Result<Vec<braid::recovery::RecoveredRun>, Exit> {
    host.recoverer(&state.state_dir, max_concurrency)
        .recover()
        .await
        .map_err(|e| Exit(1, e.into()))
}
