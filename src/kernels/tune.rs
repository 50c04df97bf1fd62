//! The tile a [`TileChoice::Tuned`](super::TileChoice::Tuned) projection or weight update
//! runs with: CubeCL's autotuner times the 64×64 and the 128×128 kernels (`project.wgsl`
//! against `project_wide.wgsl`, `update.wgsl` against `update_wide.wgsl`) on the device, once
//! per shape and device in a process (and from CubeCL's persistent cache after that, where
//! it is on), and the faster one runs from then on. Products under [`TUNED_MIN_MACS`]
//! multiply-adds keep the 64×64 tile untimed: there launch overhead dominates, and timing
//! would not pay for itself.
//!
//! Both tiles compute the same sums in the same order (one partial sum per output element,
//! over the shared dimension in ascending rows), so the choice changes speed, not results
//! beyond a compiler's freedom to contract multiply-adds.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use burn::backend::wgpu::CubeTensor;
use burn::cubecl::CubeTuneId;
use burn::cubecl::tune::{
    AutotuneKey, AutotuneOutput, LocalTuner, Tunable, TunableSet, local_tuner,
};
use serde::{Deserialize, Serialize};

use super::launch::{Limits, is_transposed_view};
use super::project::{self, ProjectionTile};
use super::update::{self, UpdateLaunch};

/// Products of fewer multiply-adds (a·r·b) than this run the 64×64 tile without timing
/// (2^24: the llama 60m shapes at r = 128 are over it, the 20m ones at r = 64 under it).
pub const TUNED_MIN_MACS: usize = 1 << 24;

/// What a tuning result is cached under: the sizes, the layout the kernel reads, and the
/// limits its launches are planned for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TileKey {
    /// `"project"` or `"update"`.
    pub kernel: String,
    /// Rows of S (the shared dimension of SᵀG, the rows of W').
    pub a: usize,
    /// Rank.
    pub r: usize,
    /// Columns of G and W.
    pub b: usize,
    /// The right case's layout: G (projection) or W (update) stored transposed.
    pub transposed: bool,
    /// The update's recovery term G⊙ψ (false for the projection).
    pub recovery: bool,
    /// The launch limits (row chunks and column groups follow from them).
    pub max_binding_bytes: usize,
    /// See [`Limits::max_workgroups`].
    pub max_workgroups: usize,
}

impl fmt::Display for TileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subtrack {} {}×{} r={}{}{} limits={}B/{}",
            self.kernel,
            self.a,
            self.b,
            self.r,
            if self.transposed { " transposed" } else { "" },
            if self.recovery { " recovery" } else { "" },
            self.max_binding_bytes,
            self.max_workgroups
        )
    }
}

impl AutotuneKey for TileKey {}

impl TileKey {
    fn new(
        kernel: &str,
        [a, r, b]: [usize; 3],
        transposed: bool,
        recovery: bool,
        limits: Limits,
    ) -> Self {
        TileKey {
            kernel: kernel.to_string(),
            a,
            r,
            b,
            transposed,
            recovery,
            max_binding_bytes: limits.max_binding_bytes,
            max_workgroups: limits.max_workgroups,
        }
    }
}

/// The tiles the tuner chose in this process, by key.
static CHOSEN: Mutex<BTreeMap<TileKey, ProjectionTile>> = Mutex::new(BTreeMap::new());

/// Every tile the autotuner chose in this process so far, with the shape it was chosen for
/// (for reports: the benchmark prints them).
pub fn tuned_tiles() -> Vec<(TileKey, ProjectionTile)> {
    let chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    chosen.iter().map(|(k, t)| (k.clone(), *t)).collect()
}

/// The tile chosen for `kernel` (`"project"` or `"update"`) at sizes `[a, r, b]`, in any
/// layout or limits: `None` until a tuned launch of those sizes ran.
pub fn tuned_tile(kernel: &str, [a, r, b]: [usize; 3]) -> Option<ProjectionTile> {
    tuned_tiles()
        .into_iter()
        .find(|(k, _)| k.kernel == kernel && [k.a, k.r, k.b] == [a, r, b])
        .map(|(_, t)| t)
}

/// Note the tile `fastest` names for `key`, the first time it names one.
fn record(key: &TileKey, fastest: impl FnOnce() -> Option<ProjectionTile>) {
    let mut chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    if !chosen.contains_key(key)
        && let Some(tile) = fastest()
    {
        chosen.insert(key.clone(), tile);
    }
}

const TILES: [ProjectionTile; 2] = [ProjectionTile::Block64, ProjectionTile::Block128];

/// (G̃, flag) of a projection, as one autotune output.
#[derive(Debug)]
struct Projected(CubeTensor, CubeTensor);

impl AutotuneOutput for Projected {}

/// S, G, the launch limits and the parameter-buffer head (see [`project::launch`]).
type ProjectInputs = (CubeTensor, CubeTensor, Limits, Vec<f32>);

fn project_key((basis, g, limits, _): &ProjectInputs) -> TileKey {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = g.meta.shape()[1];
    // Read in place only where one launch takes every row (`launch::stored_gradient`).
    let whole = project::plan(a, r, b, *limits) == Some(a);
    TileKey::new(
        "project",
        [a, r, b],
        whole && is_transposed_view(g),
        false,
        *limits,
    )
}

/// [`project::launch`] with the tile the autotuner finds faster for these sizes.
pub fn project(
    basis: CubeTensor,
    g: CubeTensor,
    limits: Limits,
    head: Vec<f32>,
) -> (CubeTensor, CubeTensor) {
    static TUNER: LocalTuner<TileKey, CubeTuneId> = local_tuner!("project");
    let like = g.clone();
    let inputs = (basis, g, limits, head);
    let Projected(g_low, flag) = run_tuned(&TUNER, &like, project_key, inputs, |inputs, tile| {
        let (basis, g, limits, head) = inputs;
        let (g_low, flag) = project::launch(basis, g, tile.into(), limits, &head);
        Projected(g_low, flag)
    });
    (g_low, flag)
}

/// S, N, W, the parameter buffer, the recovery inputs (G, ψ, G̃) and the launch (see
/// [`update::launch`]).
type UpdateInputs = (
    CubeTensor,
    CubeTensor,
    CubeTensor,
    CubeTensor,
    Option<(CubeTensor, CubeTensor, CubeTensor)>,
    UpdateLaunch,
);

fn update_key((basis, normalized, _, _, recovery, how): &UpdateInputs) -> TileKey {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = normalized.meta.shape()[1];
    let sizes = [a, r, b];
    TileKey::new(
        "update",
        sizes,
        how.transposed,
        recovery.is_some(),
        how.limits,
    )
}

/// [`update::launch`] with the tile the autotuner finds faster for these sizes. The
/// candidates write W' to buffers of their own, so timing them leaves W as it is.
pub fn update(
    basis: CubeTensor,
    normalized: CubeTensor,
    weight: CubeTensor,
    scalars: CubeTensor,
    recovery: Option<(CubeTensor, CubeTensor, CubeTensor)>,
    how: UpdateLaunch,
) -> CubeTensor {
    static TUNER: LocalTuner<TileKey, CubeTuneId> = local_tuner!("update");
    let like = weight.clone();
    let inputs = (basis, normalized, weight, scalars, recovery, how);
    run_tuned(&TUNER, &like, update_key, inputs, |inputs, tile| {
        let (basis, normalized, weight, scalars, recovery, how) = inputs;
        let how = UpdateLaunch {
            tile: tile.into(),
            ..how
        };
        update::launch(basis, normalized, weight, scalars, recovery, how)
    })
}

/// `launch(inputs, tile)` with the tile `tuner` finds faster for `key_of(inputs)` on
/// `like`'s device: each [`ProjectionTile`] is a candidate, timed on clones of `inputs`
/// the first time a key is seen.
fn run_tuned<I, Out>(
    tuner: &'static LocalTuner<TileKey, CubeTuneId>,
    like: &CubeTensor,
    key_of: fn(&I) -> TileKey,
    inputs: I,
    launch: fn(I, ProjectionTile) -> Out,
) -> Out
where
    I: Clone + Send + Sync + 'static,
    Out: AutotuneOutput,
{
    let client = like.client.clone();
    let id = CubeTuneId::new(&client, &like.device);
    let set = tuner.init(&id, move || {
        let set = TunableSet::<_, I, _, _>::new_cloning_inputs(key_of);
        TILES.into_iter().fold(set, |set, tile| {
            set.with(Tunable::identified(tile, move |inputs: I| {
                Ok::<_, String>(launch(inputs, tile))
            }))
        })
    });
    let key = key_of(&inputs);
    let out = tuner.execute(&id, &client, set.clone(), inputs);
    record(&key, || tuner.fastest_identity(&id, &set, &key));
    out
}
