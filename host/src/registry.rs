//! What `braid serve` runs now: the served workflows and, for each
//! component, its versions - and hot-swapping them.
//!
//! A component is addressed by name: the file stem of the `.wasm` file the
//! workflows' steps name (`components_dir/NAME.wasm`). A new version arrives
//! as an upload (`PUT /v1/components/NAME`) or a changed file (`--watch`). It
//! is compiled, checked against the world of the version it replaces, and
//! pre-instantiated before it goes live; if anything fails, the old version
//! keeps serving and the reason is returned. Going live is one swap of the
//! workflows' schedulers under a lock: runs already in flight hold the
//! scheduler they started with, so each run uses one version of each step
//! from start to end, and its report records each step's sha256.
//!
//! Every version is kept in `<state-dir>/component-history/NAME/SHA256.wasm`
//! (the journal names that file, so a crashed run is undone by the exact
//! version that ran), which is also what `rollback` goes back to.

use crate::sandbox::{PreparedComponent, Sandbox, SandboxExecutor};
use crate::scheduler::Scheduler;
use crate::workflow::Workflow;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One step's component as served.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentInfo {
    /// The component's name (the registry file's stem).
    pub name: String,
    /// The registry file the workflow names.
    pub path: PathBuf,
    pub sha256: String,
    pub world: &'static str,
}

/// One workflow ready to run, with the components it runs now.
pub struct Served {
    pub workflow: Arc<Workflow>,
    pub scheduler: Scheduler<SandboxExecutor>,
    /// Step -> component.
    pub components: BTreeMap<String, ComponentInfo>,
}

impl Served {
    pub fn new(workflow: Arc<Workflow>, scheduler: Scheduler<SandboxExecutor>) -> Served {
        let prepared = scheduler.executor().components();
        let components = workflow
            .steps
            .iter()
            .filter_map(|step| {
                let c: &PreparedComponent = prepared.get(step.name.as_str())?;
                Some((
                    step.name.clone(),
                    ComponentInfo {
                        name: component_name(&step.component),
                        path: step.component.clone(),
                        sha256: c.sha256.clone(),
                        world: c.world(),
                    },
                ))
            })
            .collect();
        drop(prepared);
        Served {
            workflow,
            scheduler,
            components,
        }
    }
}

/// The stem of a component file: its name in the registry.
pub fn component_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One version of a component.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub sha256: String,
    pub size_bytes: u64,
    /// `initial`, `upload`, `watch` or `rollback`.
    pub source: String,
    pub installed_at_ms: u64,
}

/// What an install or rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct SwapOutcome {
    pub component: String,
    pub previous_sha256: String,
    pub sha256: String,
    /// False when the version was already live (nothing changed).
    pub swapped: bool,
    /// `workflow/step` now running it.
    pub steps: Vec<String>,
    pub load_ms: f64,
}

/// Why a version did not go live (the old one keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("no served step uses a component named `{0}` (known: {1})")]
    Unknown(String, String),
    #[error("component `{0}` is ambiguous: served steps name several files with that stem ({1})")]
    Ambiguous(String, String),
    #[error("component `{name}` rejected, the old version keeps serving: {reason}")]
    Rejected { name: String, reason: String },
    #[error("component `{0}` has no earlier version to roll back to")]
    NoPrevious(String),
    #[error("component `{name}`: {path}: {source}")]
    Io {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The live table: what new runs use.
pub struct Live {
    sandbox: Arc<Sandbox>,
    workflows: RwLock<BTreeMap<String, Arc<Served>>>,
    history_dir: PathBuf,
    /// Per component name, oldest first; the last is live.
    versions: Mutex<BTreeMap<String, Vec<Version>>>,
    /// One swap at a time.
    swapping: tokio::sync::Mutex<()>,
}

fn now_ms() -> u64 {
    crate::store::now_ms()
}

impl Live {
    /// Starts the table with the workflows as loaded; their components are
    /// the `initial` versions (copied into the history).
    pub fn new(sandbox: Arc<Sandbox>, workflows: Vec<Served>, state_dir: &Path) -> Live {
        let history_dir = state_dir.join("component-history");
        let mut versions: BTreeMap<String, Vec<Version>> = BTreeMap::new();
        for served in &workflows {
            for info in served.components.values() {
                let list = versions.entry(info.name.clone()).or_default();
                if list.iter().any(|v| v.sha256 == info.sha256) {
                    continue;
                }
                let size_bytes = std::fs::metadata(&info.path).map(|m| m.len()).unwrap_or(0);
                let kept = history_dir
                    .join(&info.name)
                    .join(format!("{}.wasm", info.sha256));
                if !kept.exists()
                    && let Err(e) = std::fs::create_dir_all(kept.parent().unwrap_or(&history_dir))
                        .and_then(|()| std::fs::copy(&info.path, &kept).map(|_| ()))
                {
                    tracing::warn!(component = %info.name, "cannot keep the initial version for rollback: {e}");
                }
                list.push(Version {
                    sha256: info.sha256.clone(),
                    size_bytes,
                    source: "initial".into(),
                    installed_at_ms: now_ms(),
                });
            }
        }
        Live {
            sandbox,
            workflows: RwLock::new(
                workflows
                    .into_iter()
                    .map(|s| (s.workflow.name.clone(), Arc::new(s)))
                    .collect(),
            ),
            history_dir,
            versions: Mutex::new(versions),
            swapping: tokio::sync::Mutex::new(()),
        }
    }

    pub fn workflow(&self, name: &str) -> Option<Arc<Served>> {
        self.workflows.read().ok()?.get(name).cloned()
    }

    pub fn workflows(&self) -> Vec<Arc<Served>> {
        self.workflows
            .read()
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn names(&self) -> Vec<String> {
        self.workflows
            .read()
            .map(|w| w.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every version of every component, oldest first (the last is live).
    pub fn versions(&self) -> BTreeMap<String, Vec<Version>> {
        self.versions.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The registry file and the steps (`(workflow, step)`) of component `name`.
    fn uses(&self, name: &str) -> Result<(PathBuf, Vec<(String, String)>), SwapError> {
        let mut paths: BTreeMap<PathBuf, Vec<(String, String)>> = BTreeMap::new();
        let mut known = std::collections::BTreeSet::new();
        for served in self.workflows() {
            for (step, info) in &served.components {
                known.insert(info.name.clone());
                if info.name == name {
                    paths
                        .entry(info.path.clone())
                        .or_default()
                        .push((served.workflow.name.clone(), step.clone()));
                }
            }
        }
        let mut paths = paths.into_iter();
        match (paths.next(), paths.next()) {
            (None, _) => Err(SwapError::Unknown(
                name.to_string(),
                known.into_iter().collect::<Vec<_>>().join(", "),
            )),
            (Some((path, uses)), None) => Ok((path, uses)),
            (Some((a, _)), Some((b, _))) => Err(SwapError::Ambiguous(
                name.to_string(),
                format!("{}, {}", a.display(), b.display()),
            )),
        }
    }

    /// Compiles, checks and pre-instantiates the file `kept` off the async
    /// threads, and checks it implements what every step using `name` needs.
    async fn load_checked(
        &self,
        name: &str,
        kept: &Path,
    ) -> Result<(Arc<PreparedComponent>, f64), SwapError> {
        let sandbox = Arc::clone(&self.sandbox);
        let to_load = kept.to_path_buf();
        let started = std::time::Instant::now();
        let loaded = tokio::task::spawn_blocking(move || sandbox.load(&to_load))
            .await
            .map_err(|e| SwapError::Rejected {
                name: name.to_string(),
                reason: format!("loading failed: {e}"),
            })?;
        let load_ms = started.elapsed().as_secs_f64() * 1000.0;
        let rejected = |reason: String| SwapError::Rejected {
            name: name.to_string(),
            reason,
        };
        let component = Arc::new(loaded.map_err(|e| rejected(e.to_string()))?);
        // It must implement what the steps that use it need.
        for served in self.workflows() {
            for (step, info) in &served.components {
                if info.name == name && info.world != component.world() {
                    return Err(rejected(format!(
                        "it implements {}, but step `{}/{step}` needs {}",
                        component.world(),
                        served.workflow.name,
                        info.world
                    )));
                }
            }
        }
        Ok((component, load_ms))
    }

    /// `text` without the server's own paths (the history and staging
    /// directories): what a remote caller may be told.
    pub fn without_paths(&self, text: &str) -> String {
        // The staging directory is inside the history directory.
        let shown = self.history_dir.display().to_string();
        if shown.is_empty() {
            return text.to_string();
        }
        text.replace(&shown, "<server>")
    }

    /// A new file to stage a version's bytes in as they arrive (under the
    /// history directory, so installing it is a rename), and its path.
    pub fn staging_file(&self) -> std::io::Result<(PathBuf, std::fs::File)> {
        let dir = self.history_dir.join(".staging");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("upload-{:016x}.part", rand::random::<u64>()));
        let file = std::fs::File::create_new(&path)?;
        Ok((path, file))
    }

    /// Makes `bytes` the live version of component `name` (see
    /// [`Live::install_staged`]).
    pub async fn install(
        &self,
        name: &str,
        bytes: Vec<u8>,
        source: &str,
        write_back: bool,
    ) -> Result<SwapOutcome, SwapError> {
        let io = |path: &Path| {
            let (name, path) = (name.to_string(), path.to_path_buf());
            move |source| SwapError::Io { name, path, source }
        };
        let (path, mut file) = self.staging_file().map_err(io(&self.history_dir))?;
        let staged = Staged::new(
            path.clone(),
            hex::encode(Sha256::digest(&bytes)),
            bytes.len() as u64,
        );
        std::io::Write::write_all(&mut file, &bytes).map_err(io(&path))?;
        drop((file, bytes));
        self.install_staged(name, staged, source, write_back).await
    }

    /// Makes the staged version the live version of component `name`, or
    /// says why not. With `write_back`, the registry file is replaced too
    /// (atomically), so a restart serves the same version. The bytes are
    /// never held in memory here: the staged file becomes the version's
    /// history file, and the registry file a copy of it.
    pub async fn install_staged(
        &self,
        name: &str,
        staged: Staged,
        source: &str,
        write_back: bool,
    ) -> Result<SwapOutcome, SwapError> {
        let _one_at_a_time = self.swapping.lock().await;
        let (path, uses) = self.uses(name)?;
        let sha256 = staged.sha256.clone();
        let steps: Vec<String> = uses.iter().map(|(w, s)| format!("{w}/{s}")).collect();
        let current = self.current_sha(name);
        if current.as_deref() == Some(sha256.as_str()) {
            return Ok(SwapOutcome {
                component: name.to_string(),
                previous_sha256: sha256.clone(),
                sha256,
                swapped: false,
                steps,
                load_ms: 0.0,
            });
        }
        let io = |path: &Path| {
            let (name, path) = (name.to_string(), path.to_path_buf());
            move |source| SwapError::Io { name, path, source }
        };
        // Keep the bytes as this version's history file, then compile,
        // check and pre-instantiate that file off the async threads.
        let dir = self.history_dir.join(name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let kept = dir.join(format!("{sha256}.wasm"));
        let written = !kept.exists();
        if written {
            std::fs::rename(&staged.path, &kept).map_err(io(&kept))?;
        }
        let size_bytes = staged.size;
        drop(staged);
        let component = self.load_checked(name, &kept).await;
        let (component, load_ms) = match component {
            Ok(loaded) => loaded,
            Err(e) => {
                // A refused upload leaves nothing behind (the directory goes
                // too if it holds nothing else).
                if written {
                    let _ = std::fs::remove_file(&kept);
                    let _ = std::fs::remove_dir(&dir);
                }
                return Err(e);
            }
        };
        let rejected = |reason: String| SwapError::Rejected {
            name: name.to_string(),
            reason,
        };
        // Go live: one swap of every affected workflow.
        {
            let mut workflows = self
                .workflows
                .write()
                .map_err(|_| rejected("the live table is poisoned".into()))?;
            for (wf_name, served) in workflows.iter_mut() {
                let mine: Vec<String> = uses
                    .iter()
                    .filter(|(w, _)| w == wf_name)
                    .map(|(_, s)| s.clone())
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let executor = served
                    .scheduler
                    .executor()
                    .with_component(&mine, Arc::clone(&component));
                let mut components = served.components.clone();
                for step in &mine {
                    if let Some(info) = components.get_mut(step) {
                        info.sha256 = sha256.clone();
                    }
                }
                *served = Arc::new(Served {
                    workflow: Arc::clone(&served.workflow),
                    scheduler: served.scheduler.with_executor(Arc::new(executor)),
                    components,
                });
            }
        }
        if let Ok(mut versions) = self.versions.lock() {
            versions.entry(name.to_string()).or_default().push(Version {
                sha256: sha256.clone(),
                size_bytes,
                source: source.to_string(),
                installed_at_ms: now_ms(),
            });
        }
        if write_back && let Err(e) = copy_atomically(&kept, &path) {
            tracing::error!(component = %name, path = %path.display(),
                "live, but the registry file could not be replaced (a restart would serve the old version): {e}");
        }
        let previous_sha256 = current.unwrap_or_default();
        tracing::warn!(component = %name, from = %previous_sha256, to = %sha256, source, load_ms, "component swapped");
        Ok(SwapOutcome {
            component: name.to_string(),
            previous_sha256,
            sha256,
            swapped: true,
            steps,
            load_ms,
        })
    }

    fn current_sha(&self, name: &str) -> Option<String> {
        self.versions
            .lock()
            .ok()?
            .get(name)?
            .last()
            .map(|v| v.sha256.clone())
    }

    /// Goes back to the version before the live one.
    pub async fn rollback(&self, name: &str) -> Result<SwapOutcome, SwapError> {
        let previous = {
            let versions = self.versions();
            let list = versions.get(name).cloned().unwrap_or_default();
            let live = list.last().map(|v| v.sha256.clone());
            list.iter()
                .rev()
                .find(|v| Some(&v.sha256) != live.as_ref())
                .map(|v| v.sha256.clone())
        };
        let Some(sha) = previous else {
            self.uses(name)?;
            return Err(SwapError::NoPrevious(name.to_string()));
        };
        let kept = self.history_dir.join(name).join(format!("{sha}.wasm"));
        let io = |source| SwapError::Io {
            name: name.to_string(),
            path: kept.clone(),
            source,
        };
        // A copy to stage (the kept file stays as it is).
        let (staging, file) = self.staging_file().map_err(io)?;
        drop(file);
        let mut staged = Staged::new(staging.clone(), sha, 0);
        staged.size = std::fs::copy(&kept, &staging).map_err(io)?;
        self.install_staged(name, staged, "rollback", true).await
    }

    /// Polls every component file each `interval`; a changed file is
    /// installed (a broken one is logged once and the old version kept).
    pub fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut seen: HashMap<PathBuf, (u64, Option<std::time::SystemTime>)> = HashMap::new();
            let mut rejected: HashMap<String, String> = HashMap::new();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
                for served in self.workflows() {
                    for info in served.components.values() {
                        files.insert(info.path.clone(), info.name.clone());
                    }
                }
                for (path, name) in files {
                    let Ok(meta) = std::fs::metadata(&path) else {
                        continue;
                    };
                    let stamp = (meta.len(), meta.modified().ok());
                    if seen.insert(path.clone(), stamp) == Some(stamp) {
                        continue;
                    }
                    let Ok(bytes) = std::fs::read(&path) else {
                        continue;
                    };
                    let sha = hex::encode(Sha256::digest(&bytes));
                    if self.current_sha(&name).as_deref() == Some(sha.as_str())
                        || rejected.get(&name) == Some(&sha)
                    {
                        continue;
                    }
                    match self.install(&name, bytes, "watch", false).await {
                        Ok(_) => {
                            rejected.remove(&name);
                        }
                        Err(e) => {
                            tracing::error!(component = %name, path = %path.display(), "{e}");
                            rejected.insert(name, sha);
                        }
                    }
                }
            }
        });
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over.
/// Replaces `path` with a copy of `from`, atomically (a copy beside it,
/// then a rename): a reader sees the old file or the new one, whole.
fn copy_atomically(from: &Path, path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        component_name(path),
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A version's bytes in a file of the history directory's staging area
/// (written as they arrived, with their sha256 and size): what
/// [`Live::install_staged`] installs. Removed when dropped, unless it was
/// installed (moved to the history).
pub struct Staged {
    path: PathBuf,
    sha256: String,
    size: u64,
}

impl Staged {
    /// The staged file `path` (from [`Live::staging_file`]) holding `size`
    /// bytes whose sha256 is `sha256`.
    pub fn new(path: PathBuf, sha256: String, size: u64) -> Staged {
        Staged { path, sha256, size }
    }

    /// Says what the file holds, once it is all written.
    pub fn set_content(&mut self, sha256: String, size: u64) {
        self.sha256 = sha256;
        self.size = size;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Gone already if it was installed (renamed into the history).
        let _ = std::fs::remove_file(&self.path);
    }
}
