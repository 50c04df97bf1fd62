//! Optimizer records: state size, atomic saving, and loading that refuses a mismatch.
//!
//! Burn's `ModuleOptimizer::load_record` silently re-initialises any parameter whose state
//! it cannot rebuild. [`load_checked`] validates the whole record against the module first
//! and returns an error instead.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Bytes, Tensor};
use burn_pack::{Reader, Scalar};

use crate::SubTrackError;
use crate::state::{Layout, Leaves, canonical_layout, check_layout, leaf};

/// Bytes of optimizer state tensors, split by kind. Counts every tensor the state holds on
/// the device (basis, moments, the 4-byte limiter norm); the host-side step counters are not
/// included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateBytes {
    /// All state tensors.
    pub total: usize,
    /// States of projected matrices: S (a×r), M and V (r×b) and the limiter norm.
    pub projected: usize,
    /// Every other state (AdamW moments of dense parameters, or any other optimizer's).
    pub dense: usize,
}

/// One parameter's entries in a record: tensor leaf → shape and bytes, and its scalars.
#[derive(Default)]
struct Entry {
    tensors: BTreeMap<String, (Vec<usize>, usize)>,
    scalars: BTreeMap<String, Scalar>,
}

impl Entry {
    fn leaves(&self) -> Leaves<'_> {
        let shape = |name: &str| self.tensors.get(name).map(|(s, _)| &s[..]);
        Leaves {
            basis: shape(leaf::BASIS),
            moment_1: shape(leaf::MOMENT_1),
            moment_2: shape(leaf::MOMENT_2),
            limiter_norm: shape(leaf::LIMITER_NORM),
            step: self.scalars.get(leaf::STEP).copied(),
            transposed: self.scalars.get(leaf::TRANSPOSED).copied(),
        }
    }
}

/// Parse a record's bytes into per-parameter entries.
fn entries(bytes: Bytes) -> Result<BTreeMap<u64, Entry>, SubTrackError> {
    let corrupt =
        |e: burn_pack::Error| SubTrackError::RecordMismatch(format!("unreadable record: {e}"));
    let reader = Reader::from_bytes(bytes).map_err(corrupt)?;
    let mut out: BTreeMap<u64, Entry> = BTreeMap::new();
    for (name, value) in reader.scalars() {
        if let Some((id, leaf)) = name.split_once('.')
            && let Ok(id) = id.parse::<u64>()
        {
            out.entry(id)
                .or_default()
                .scalars
                .insert(leaf.to_string(), *value);
        }
    }
    for tensor in reader.into_tensors().map_err(corrupt)? {
        let id = tensor.param_id.ok_or_else(|| {
            SubTrackError::RecordMismatch(format!("tensor `{}` has no parameter id", tensor.name))
        })?;
        let leaf = tensor
            .name
            .split_once('.')
            .map_or(tensor.name.as_str(), |(_, leaf)| leaf)
            .to_string();
        let shape = tensor.shape.to_vec();
        let bytes = tensor.byte_len();
        out.entry(id)
            .or_default()
            .tensors
            .insert(leaf, (shape, bytes));
    }
    Ok(out)
}

/// Exact bytes of the optimizer state held by `optim`.
///
/// Reads the state back through a record, so it costs one copy of the state to the host.
pub fn state_bytes(optim: &ModuleOptimizer) -> Result<StateBytes, SubTrackError> {
    let bytes = optim
        .to_record()
        .into_bytes()
        .map_err(|e| SubTrackError::Io(e.to_string()))?;
    let mut out = StateBytes::default();
    for entry in entries(bytes)?.values() {
        out.add(entry);
    }
    Ok(out)
}

impl StateBytes {
    /// Count one parameter's state tensors.
    fn add(&mut self, entry: &Entry) {
        let size: usize = entry.tensors.values().map(|(_, b)| b).sum();
        if entry.tensors.contains_key(leaf::BASIS) {
            self.projected += size;
        } else {
            self.dense += size;
        }
        self.total += size;
    }
}

/// The optimizer-state bytes each of `devices` devices holds when Burn's
/// `MultiDeviceOptim::OptimSharded` (burn-train 0.22.1) spreads the parameters of `optim`
/// over them: each parameter's gradients are summed, and its state kept, on device
/// `id mod devices` of the strategy's list (`MultiGradientsParams`, where every device
/// returns a gradient for every parameter), its [`ParamId`](burn::module::ParamId) taken as
/// a number. Element `i` is device `i`'s share; they add up to [`state_bytes`].
///
/// Reads the state back through a record, like [`state_bytes`]. Panics when `devices` is 0.
pub fn sharded_state_bytes(
    optim: &ModuleOptimizer,
    devices: usize,
) -> Result<Vec<StateBytes>, SubTrackError> {
    assert!(devices > 0, "sharded_state_bytes: no devices");
    let bytes = optim
        .to_record()
        .into_bytes()
        .map_err(|e| SubTrackError::Io(e.to_string()))?;
    let mut out = vec![StateBytes::default(); devices];
    for (id, entry) in entries(bytes)? {
        out[(id % devices as u64) as usize].add(&entry);
    }
    Ok(out)
}

/// Write the optimizer's record to `path` atomically: into a temporary file beside it,
/// flushed to disk, then renamed over `path`. A crash leaves either the old file or the new.
pub fn save_atomic(optim: &ModuleOptimizer, path: impl AsRef<Path>) -> Result<(), SubTrackError> {
    let bytes = optim
        .to_record()
        .into_bytes()
        .map_err(|e| SubTrackError::Io(e.to_string()))?;
    write_atomic(path.as_ref(), &bytes)
}

/// Write `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SubTrackError> {
    let io = |what: &str, e: std::io::Error| {
        SubTrackError::Io(format!("{what} {}: {e}", path.display()))
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| SubTrackError::Io(format!("{} names no file", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file =
            std::fs::File::create(&tmp).map_err(|e| io("creating a temporary for", e))?;
        file.write_all(data).map_err(|e| io("writing", e))?;
        file.sync_all().map_err(|e| io("syncing", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("renaming into", e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Parameter id → shape of every float parameter of a module.
struct Shapes(HashMap<u64, Vec<usize>>);

impl ModuleVisitor for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.insert(param.id.val(), param.val().dims().to_vec());
    }
}

/// Load a record saved by [`save_atomic`] (or `ModuleOptimizer::into_bytes`) into `optim`,
/// refusing any mismatch with `module` instead of re-initialising state.
///
/// Errors when the bytes are not a record, when a state names a parameter the module lacks,
/// when a SubTrack state is incomplete or its shapes do not fit its parameter, or when Burn
/// could not rebuild every state.
pub fn load_checked<M: Module>(
    optim: ModuleOptimizer,
    bytes: Bytes,
    module: &M,
) -> Result<ModuleOptimizer, SubTrackError> {
    let mismatch = SubTrackError::RecordMismatch;
    let record_entries = entries(bytes.clone())?;
    let mut shapes = Shapes(HashMap::new());
    module.visit(&mut shapes);
    for (id, entry) in &record_entries {
        let shape = shapes
            .0
            .get(id)
            .ok_or_else(|| mismatch(format!("parameter {id} is not in the module")))?;
        let is_subtrack =
            entry.scalars.contains_key(leaf::STEP) && entry.tensors.contains_key(leaf::MOMENT_1);
        if !is_subtrack {
            continue; // another optimizer's state (e.g. a routed AdamW group)
        }
        let layout = check_layout(&entry.leaves(), shape.len())
            .map_err(|e| mismatch(format!("parameter {id}: {e}")))?;
        let fits = match layout {
            Layout::Dense => entry.tensors[leaf::MOMENT_1].0 == *shape,
            Layout::Projected {
                a, b, transposed, ..
            } => canonical_layout(shape[0], shape[1]) == (a, b, transposed),
        };
        if !fits {
            return Err(mismatch(format!(
                "parameter {id} has shape {shape:?}, its state is {layout:?}"
            )));
        }
    }
    let record = OptimizerRecord::from_bytes(bytes).map_err(|e| mismatch(e.to_string()))?;
    let loaded = optim.load_record(record);
    let rebuilt = entries(
        loaded
            .to_record()
            .into_bytes()
            .map_err(|e| SubTrackError::Io(e.to_string()))?,
    )?;
    if let Some(id) = record_entries.keys().find(|id| !rebuilt.contains_key(id)) {
        return Err(mismatch(format!(
            "the state of parameter {id} could not be rebuilt by this optimizer"
        )));
    }
    Ok(loaded)
}

/// [`load_checked`] from a file written by [`save_atomic`].
pub fn load_checked_file<M: Module>(
    optim: ModuleOptimizer,
    path: impl AsRef<Path>,
    module: &M,
) -> Result<ModuleOptimizer, SubTrackError> {
    let path = path.as_ref();
    let data = std::fs::read(path)
        .map_err(|e| SubTrackError::Io(format!("reading {}: {e}", path.display())))?;
    load_checked(optim, Bytes::from_bytes_vec(data), module)
}
