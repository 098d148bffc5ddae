//! From a suite file to a sealed graph: parse (with `--set` and environment overrides), check
//! the inputs it names, expand for a device kind. The one path every suite command takes.
//! Writes nothing but the weights-digest cache of an existing store.
use crate::datasets::{self, DigestCache, RealSource};
use crate::graph::{expand, Digests, Graph};
use crate::numerics::DeviceKind;
use crate::store::{digest_file, Store};
use crate::suite::{self, Diagnostic, Suite, SuiteError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed, checked and expanded suite with its store.
pub struct Loaded {
    pub suite: Suite,
    pub store: Store,
    pub graph: Graph,
    pub device: DeviceKind,
}

impl Loaded {
    /// The same suite expanded for the other device kind: `report` and `gc` must see runs
    /// made on a GPU machine from a CPU-only one (and the reverse).
    pub fn other_device(&self) -> Result<Graph, SuiteError> {
        let other = match self.device {
            DeviceKind::Cpu => DeviceKind::Cuda,
            DeviceKind::Cuda => DeviceKind::Cpu,
        };
        let mut g = expand_for(&self.suite, &self.store.root, other)?;
        g.grow(&|k| crate::nodes::select::chosen(&self.store, k));
        Ok(g)
    }
}

/// Loads `path` with `sets` overrides, checks dataset roots and weights, and expands it for
/// device nodes on `device`. The store is `store`, else the suite's own.
pub fn load(
    path: &Path,
    sets: &[String],
    store: Option<&Path>,
    device: DeviceKind,
) -> Result<Loaded, SuiteError> {
    let suite = suite::load(path, sets)?;
    let root: PathBuf = store.map_or_else(|| suite.store.clone(), Path::to_path_buf);
    suite::check_inputs(&suite)?;
    let mut graph = expand_for(&suite, &root, device)?;
    let store = Store::at(&root);
    // The finals of the selections already made (the protocol stage).
    graph.grow(&|k| crate::nodes::select::chosen(&store, k));
    Ok(Loaded {
        suite,
        store,
        graph,
        device,
    })
}

fn expand_for(suite: &Suite, root: &Path, device: DeviceKind) -> Result<Graph, SuiteError> {
    let cache_path = file_digests(root);
    let mut cache = DigestCache::load(&cache_path);
    let mut source = |r: &RealSource| datasets::fingerprint_with(r, &mut cache);
    let digests = Digests {
        weights: &weights_digest(root),
        source: &mut source,
    };
    let graph = expand(suite, device, digests);
    // Only into an existing store: planning an invalid suite must write nothing.
    if root.is_dir() {
        let _ = cache.save(&cache_path);
    }
    graph.map_err(|errors| {
        // Each names its key already (`datasets.NAME`: why).
        let errors = errors.into_iter().map(|e| Diagnostic::invalid("", e));
        SuiteError::new(&suite.path, errors.collect())
    })
}

/// Where a store caches the content digests of dataset files (by path, size and mtime).
pub fn file_digests(store_root: &Path) -> PathBuf {
    store_root.join("cache").join("file-digests.json")
}

/// Weights digests, cached per (path, size, mtime) in the store: hashing a ViT-B file on
/// every `plan` would cost a third of a second.
fn weights_digest(store_root: &Path) -> impl Fn(&Path) -> Result<String, String> + '_ {
    move |p: &Path| {
        let meta = std::fs::metadata(p)
            .map_err(|e| format!("`backbone.weights`: {}: {e}", p.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let id = format!("{}|{}|{mtime}", p.display(), meta.len());
        let cache = store_root.join("digests.json");
        let mut map: BTreeMap<String, String> = std::fs::read_to_string(&cache)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if let Some(d) = map.get(&id) {
            return Ok(d.clone());
        }
        let d = digest_file(p).map_err(|e| e.to_string())?;
        map.insert(id, d.clone());
        // Only into an existing store: planning an invalid suite must write nothing.
        if store_root.is_dir() {
            let _ = std::fs::write(
                &cache,
                serde_json::to_string_pretty(&map).unwrap_or_default(),
            );
        }
        Ok(d)
    }
}
