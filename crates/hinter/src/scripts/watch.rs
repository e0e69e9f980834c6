//! File-change triggers: a triggered job whose settings.job has `watch` (a path or glob;
//! relative to the job's folder unless absolute) gets one job per file created or changed
//! under it, payload `{"path", "event"}`.
//!
//! - A file is taken once it has been quiet for [`SETTLE`]: one written in several chunks
//!   triggers once, when complete.
//! - At start every matching file is looked at (`event: "scan"`): files created or changed while
//!   no server ran are not lost.
//! - Each job's `unique_key` is a hash of the path, modification time and size, kept
//!   [`REMEMBER`]: the same version of a file never triggers twice, whichever server sees it and
//!   however often it starts.

use super::folder::{Kind, ScriptJob};
use chrono::Utc;
use hinter_core::{Definitions, JobSpec, Store};
use notify::{RecursiveMode, Watcher};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// How long a file must be left alone before it triggers.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How long a version of a file is remembered across servers and restarts.
pub const REMEMBER: Duration = Duration::from_secs(30 * 86_400);
/// How often pending files are looked at.
const TICK: Duration = Duration::from_millis(200);
/// Most files the start scan looks at per watch.
const MAX_SCAN: usize = 100_000;

/// One job's watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub job: String,
    /// The pattern, absolute, compiled once.
    pub pattern: glob::Pattern,
    /// The directory watched: the pattern's longest part without wildcards.
    pub base: PathBuf,
}

/// The watches the runnable triggered jobs of `jobs` declare; a bad pattern is logged.
pub fn specs(jobs: &[ScriptJob]) -> Vec<WatchSpec> {
    let mut out = Vec::new();
    for job in jobs {
        if job.kind != Kind::Triggered || !job.is_runnable() {
            continue;
        }
        let Some(watch) = job.settings.as_ref().and_then(|s| s.watch.as_deref()) else {
            continue;
        };
        let path = Path::new(watch);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            job.folder.join(path)
        };
        let pattern = absolute.to_string_lossy().into_owned();
        if let Err(e) = glob::Pattern::new(&pattern) {
            tracing::error!(job = %job.name, watch, "settings.job \"watch\" is not a usable pattern: {e}");
            continue;
        }
        let mut base = PathBuf::new();
        for part in absolute.components() {
            let text = part.as_os_str().to_string_lossy();
            if text.contains(['*', '?', '[']) {
                break;
            }
            base.push(part);
        }
        // A plain path names a file (watch its directory) or a directory (every file in it).
        if base == absolute && !absolute.is_dir() {
            base = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
        }
        let pattern = if base == absolute {
            format!("{}/**/*", pattern.trim_end_matches('/'))
        } else {
            pattern
        };
        let Ok(pattern) = glob::Pattern::new(&pattern) else {
            continue;
        };
        out.push(WatchSpec {
            job: job.name.clone(),
            pattern,
            base,
        });
    }
    out
}

/// Runs the watches until dropped; [`Watches::update`] replaces them.
pub struct Watches {
    specs: tokio::sync::watch::Sender<Vec<WatchSpec>>,
    _task: crate::exec::AbortOnDrop<()>,
}

impl Watches {
    pub fn start(store: Arc<dyn Store>, definitions: Definitions, specs: Vec<WatchSpec>) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(specs);
        let task = tokio::spawn(run(store, definitions, rx));
        Self {
            specs: tx,
            _task: crate::exec::AbortOnDrop(task),
        }
    }

    /// Replaces the watches (after a folder reload); unchanged ones keep going.
    pub fn update(&self, specs: Vec<WatchSpec>) {
        self.specs.send_if_modified(|current| {
            let changed = *current != specs;
            *current = specs;
            changed
        });
    }
}

async fn run(
    store: Arc<dyn Store>,
    definitions: Definitions,
    mut specs_rx: tokio::sync::watch::Receiver<Vec<WatchSpec>>,
) {
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if !event.kind.is_access() {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch files for settings.job \"watch\"");
                return;
            }
        };
    let mut watched: HashSet<PathBuf> = HashSet::new();
    let mut specs: Vec<WatchSpec> = Vec::new();
    // Paths seen changing, and when last; files known to exist (created vs changed).
    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    let mut known: HashSet<PathBuf> = HashSet::new();
    let mut first = true;
    let mut tick = tokio::time::interval(TICK);
    loop {
        if first || specs_rx.has_changed().unwrap_or(false) {
            let new = specs_rx.borrow_and_update().clone();
            let bases: HashSet<PathBuf> = new.iter().map(|s| s.base.clone()).collect();
            for gone in watched.difference(&bases) {
                let _ = watcher.unwatch(gone);
            }
            for base in bases.difference(&watched) {
                if let Err(e) = watcher.watch(base, RecursiveMode::Recursive) {
                    tracing::error!(dir = %base.display(), error = %e, "cannot watch for settings.job \"watch\"");
                }
            }
            watched = bases;
            // New watches look at what is there already (files changed while down).
            let added: Vec<WatchSpec> =
                new.iter().filter(|s| !specs.contains(s)).cloned().collect();
            specs = new;
            for spec in &added {
                for path in scan(spec) {
                    known.insert(path.clone());
                    trigger(&store, &definitions, spec, &path, "scan").await;
                }
            }
            first = false;
        }
        tokio::select! {
            Some(path) = events.recv() => {
                pending.insert(path, Instant::now());
            }
            _ = tick.tick() => {
                let due: Vec<PathBuf> = pending
                    .iter()
                    .filter(|(_, at)| at.elapsed() >= SETTLE)
                    .map(|(p, _)| p.clone())
                    .collect();
                for path in due {
                    pending.remove(&path);
                    if !path.is_file() {
                        known.remove(&path);
                        continue;
                    }
                    let event = if known.insert(path.clone()) { "created" } else { "changed" };
                    let text = path.to_string_lossy();
                    for spec in specs.iter().filter(|s| matches(s, &text)) {
                        trigger(&store, &definitions, spec, &path, event).await;
                    }
                }
            }
            changed = specs_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                // Handled at the top of the loop.
                specs_rx.mark_changed();
            }
        }
    }
}

fn matches(spec: &WatchSpec, path: &str) -> bool {
    spec.pattern.matches(path)
}

/// The files matching `spec` now.
fn scan(spec: &WatchSpec) -> Vec<PathBuf> {
    let Ok(paths) = glob::glob(spec.pattern.as_str()) else {
        return Vec::new();
    };
    paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .take(MAX_SCAN)
        .collect()
}

/// Enqueues `spec.job` for this version of `path` (a duplicate if it was enqueued before).
async fn trigger(
    store: &Arc<dyn Store>,
    definitions: &Definitions,
    spec: &WatchSpec,
    path: &Path,
    event: &str,
) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let digest = Sha256::digest(format!("{}\0{modified}\0{}", path.display(), meta.len()));
    let key: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let spec_job = JobSpec {
        job: spec.job.clone(),
        payload: json!({"path": path.to_string_lossy(), "event": event}),
        unique_key: Some(format!("watch:{key}")),
        unique_for: Some(REMEMBER),
        ..JobSpec::default()
    };
    let now = Utc::now();
    let job = match definitions.resolve(spec_job, now) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(job = %spec.job, path = %path.display(), "watch: cannot enqueue: {e}");
            return;
        }
    };
    match store.job_insert_many(vec![job], now).await {
        Ok(inserted) => {
            if let Some(first) = inserted.first().filter(|i| !i.duplicate) {
                tracing::info!(job = %spec.job, job_id = %first.job.id, path = %path.display(), event, "file change: job enqueued");
            }
        }
        Err(e) => {
            tracing::error!(job = %spec.job, path = %path.display(), error = %e, "watch: cannot enqueue")
        }
    }
}
