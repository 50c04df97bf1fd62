//! Launch counts of the WGSL kernels (`kernels/`) and the fused CPU loops (`route/flex/`):
//! each launcher counts its launches here, for the tests and the benchmark to see which
//! code ran. Per process, so tests running beside each other add to the same counts.

use std::collections::BTreeMap;
use std::sync::Mutex;

static LAUNCHES: Mutex<BTreeMap<(&'static str, [usize; 3]), u64>> = Mutex::new(BTreeMap::new());

/// Count a launch of `kernel` at sizes (a, r, b).
pub(crate) fn count_launch(kernel: &'static str, sizes: [usize; 3]) {
    let mut map = LAUNCHES.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry((kernel, sizes)).or_default() += 1;
}

/// How many times `kernel` (`"project"`, `"adam"`, `"recovery"` (one per row chunk of G)
/// or `"update"`) was launched at sizes `[a, r, b]` in
/// this process: lets callers and tests see that the WGSL kernel, not a fallback, ran.
/// `"project_split"` and `"project_reduce"` count split-K projections and their reductions,
/// `"recovery: tiled"` the launches of the tiled column-norm kernel.
/// `"project: Gᵀ in place"`, `"recovery: Gᵀ in place"` and `"update: Gᵀ in place"` count
/// the launches that read a transposed-view gradient from its own buffer, uncopied;
/// `"project: 128×128 tiles"` and `"update: 128×128 tiles"` those of the wide variants
/// (the autotuner's timing runs count too, `tune.rs`);
/// `"recovery_limit"` counts the limiter's single-workgroup launches (one per recovery);
/// `"tangent"`, `"top_singular"`, `"geodesic_step"` and `"reorthonormalize"` the tracking
/// step's kernels.
/// `"project: flex"`, `"update: flex"`, `"adam: flex"` (sizes [r, 0, b]) and
/// `"column_sq: flex"` (sizes [a, 0, b]) the fused CPU loops. `"params: packed"` and
/// `"params: uploaded"` (sizes [first slot, r, b]: slot 0 Adam, 6 recovery, 8 update; G̃
/// r×b) count the WGSL kernels that bound a step's parameter buffer as the projection made
/// it, and those that built one of their own.
pub fn launches(kernel: &str, sizes: [usize; 3]) -> u64 {
    let map = LAUNCHES.lock().unwrap_or_else(|e| e.into_inner());
    map.iter()
        .filter(|((k, s), _)| *k == kernel && *s == sizes)
        .map(|(_, n)| *n)
        .sum()
}

/// WGSL dispatches so far in this process, over every kernel and size: the [`launches`]
/// of the names without a `:` (those with one annotate a launch counted under its own
/// name, or count a CPU loop). The autotuner's timing runs count too. For measuring how
/// many launches a step makes (the benchmark's section 4); per process, so tests running
/// beside each other add to it.
#[cfg(feature = "wgpu")]
pub fn wgsl_dispatches() -> u64 {
    let map = LAUNCHES.lock().unwrap_or_else(|e| e.into_inner());
    map.iter()
        .filter(|((k, _), _)| !k.contains(':'))
        .map(|(_, n)| *n)
        .sum()
}
