//! The kernel variant a tuned launch runs with: CubeCL's autotuner times the candidates on
//! the device, once per shape and device in a process (and from CubeCL's persistent cache
//! after that, where it is on), and the fastest runs from then on.
//!
//! - The projection ([`TileChoice::Tuned`]): the 64×64 and the
//!   128×128 kernels (`project.wgsl`, `project_wide.wgsl`), each alone and, where the single
//!   launch has few workgroups ([`project::split_count`]), with split-K (partial sums over
//!   row ranges of S and G, added by `project_reduce.wgsl`); and Burn's own matmul, the
//!   portable route's product, with `finite_flag.wgsl` for the step flag, so that the tuned
//!   projection is never slower than Burn's ops.
//!
//! Only candidates whose shaders fit the key's [`Limits`] (bindings, workgroup memory and
//! size: `fit.rs`) are compiled and timed.
//! - The weight update: `update.wgsl` against `update_wide.wgsl` and Burn's own ops (its
//!   matmul for S·L).
//! - Recovery scaling's column norms ([`NormsChoice::Tuned`]): `recovery_norms.wgsl`
//!   against `recovery_norms_tiled.wgsl`.
//!
//! The backend extension launches through this module ([`launch_projection`],
//! [`launch_recovery`], [`launch_update`]): a fixed choice goes straight to its launcher, a
//! tuned one through the autotuner, which times the launchers. The launchers never call
//! back here.
//!
//! Products under [`TUNED_MIN_MACS`] multiply-adds (a·r·b) keep the 64×64 tile and the
//! per-column norms untimed: there launch overhead dominates, and timing would not pay for
//! itself.
//!
//! Both tiles compute the same sums in the same order (one partial sum per output element,
//! over the shared dimension in ascending rows), so the choice of tile changes speed, not
//! results beyond a compiler's freedom to contract multiply-adds; split-K and the tiled
//! norms add partial sums in a different order, which changes round-off (well within the
//! kernels' 1e-5).

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
use super::recovery::{self, ColumnNorms};
use super::update;

/// Products of fewer multiply-adds (a·r·b) than this run the 64×64 tile and the per-column
/// norms without timing (2^24: the llama 60m shapes at r = 128 are over it, the 20m ones at
/// r = 64 under it).
pub const TUNED_MIN_MACS: usize = 1 << 24;

/// What a tuning result is cached under: the sizes, the layout the kernel reads, and the
/// limits its launches are planned for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TileKey {
    /// `"project"`, `"update"` or `"recovery"`.
    pub kernel: String,
    /// Rows of S (the shared dimension of SᵀG, the rows of W').
    pub a: usize,
    /// Rank.
    pub r: usize,
    /// Columns of G and W.
    pub b: usize,
    /// The right case's layout: G (projection, recovery) or W (update) stored transposed
    /// and read in place.
    pub transposed: bool,
    /// The update's recovery term G⊙ψ (false for the other kernels).
    pub recovery: bool,
    /// The launch limits (row chunks and column groups follow from them).
    pub max_binding_bytes: usize,
    /// See [`Limits::max_workgroups`].
    pub max_workgroups: usize,
    /// See [`Limits::max_storage_buffers`].
    pub max_storage_buffers: usize,
    /// See [`Limits::max_workgroup_bytes`].
    pub max_workgroup_bytes: usize,
    /// See [`Limits::max_invocations`].
    pub max_invocations: usize,
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
    fn limits(&self) -> Limits {
        Limits {
            max_binding_bytes: self.max_binding_bytes,
            max_workgroups: self.max_workgroups,
            max_storage_buffers: self.max_storage_buffers,
            max_workgroup_bytes: self.max_workgroup_bytes,
            max_invocations: self.max_invocations,
        }
    }

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
            max_storage_buffers: limits.max_storage_buffers,
            max_workgroup_bytes: limits.max_workgroup_bytes,
            max_invocations: limits.max_invocations,
        }
    }
}

/// What the autotuner chose for a shape: a tile, and for the projection the split-K partial
/// sums (1: a single launch; the weight update never splits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TunedTile {
    /// The block each workgroup computes.
    pub tile: ProjectionTile,
    /// Partial sums over row ranges of S and G (1: none).
    pub splits: usize,
}

impl fmt::Display for TunedTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.splits {
            1 => write!(f, "{}", self.tile),
            splits => write!(f, "{}, split-K ×{splits}", self.tile),
        }
    }
}

/// What the autotuner chose for one key ([`tuned_tiles`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tuned {
    /// The projection's or the weight update's tile.
    Tile(TunedTile),
    /// Recovery scaling's column-norm kernel.
    Norms(ColumnNorms),
    /// Burn's own matmul for the projection, with `finite_flag.wgsl` for the step flag.
    Matmul,
}

impl fmt::Display for Tuned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tuned::Tile(tile) => tile.fmt(f),
            Tuned::Norms(norms) => norms.fmt(f),
            Tuned::Matmul => Candidate::Matmul.fmt(f),
        }
    }
}

/// One of a tuner's candidates. Its `Display` is the name CubeCL's cache checksums the
/// candidate list by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Candidate {
    /// A tile, alone or with split-K (whose split count follows from the shape:
    /// [`project::split_count`]).
    Tile { tile: ProjectionTile, split: bool },
    /// A column-norm kernel.
    Norms(ColumnNorms),
    /// Burn's matmul (the portable route's product) and the flag kernel.
    Matmul,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Candidate::Tile { tile, split } => {
                write!(f, "{tile}{}", if *split { " split-K" } else { "" })
            }
            Candidate::Norms(norms) => norms.fmt(f),
            Candidate::Matmul => f.write_str("Burn matmul"),
        }
    }
}

/// The tile a tile candidate launches for `key`, or `None` where it does not apply: a tile
/// whose shader does not fit the key's limits, split-K where [`project::split_count`]
/// declines the shape (and a norms candidate, which no tile tuner lists).
fn tile_at(candidate: Candidate, key: &TileKey) -> Option<TunedTile> {
    let Candidate::Tile { tile, split } = candidate else {
        return None;
    };
    let fits = match key.kernel.as_str() {
        "update" => update::tile_fits(tile, key.recovery, key.limits()),
        _ => project::tile_fits(tile, key.limits()),
    };
    if !fits {
        return None;
    }
    let splits = if split {
        project::split_count(tile, key.a, key.r, key.b, key.limits())?
    } else {
        1
    };
    Some(TunedTile { tile, splits })
}

/// The column-norm kernel of a norms candidate, or `None` where its shaders do not fit the
/// key's limits (and for a tile candidate, which the recovery tuner does not list).
fn norms_at(candidate: Candidate, key: &TileKey) -> Option<ColumnNorms> {
    match candidate {
        Candidate::Norms(norms) => recovery::norms_fit(norms, key.limits()).then_some(norms),
        Candidate::Tile { .. } | Candidate::Matmul => None,
    }
}

/// What an update candidate launches for `key`: a tile ([`tile_at`]), or Burn's ops, which
/// launch no shader of ours.
fn update_at(candidate: Candidate, key: &TileKey) -> Option<Tuned> {
    match candidate {
        Candidate::Matmul => Some(Tuned::Matmul),
        _ => tile_at(candidate, key).map(Tuned::Tile),
    }
}

/// What a projection candidate launches for `key`: a tile ([`tile_at`]), or Burn's matmul
/// where the flag kernel fits.
fn projection_at(candidate: Candidate, key: &TileKey) -> Option<Tuned> {
    match candidate {
        Candidate::Matmul => project::matmul_fits(key.limits()).then_some(Tuned::Matmul),
        _ => tile_at(candidate, key).map(Tuned::Tile),
    }
}

impl From<TunedTile> for Tuned {
    fn from(tile: TunedTile) -> Self {
        Tuned::Tile(tile)
    }
}

impl From<ColumnNorms> for Tuned {
    fn from(norms: ColumnNorms) -> Self {
        Tuned::Norms(norms)
    }
}

/// A tuner's candidates, and what each launches for a key (`None`: it does not apply there,
/// and the tuner skips it).
struct Candidates<L> {
    list: &'static [Candidate],
    at: fn(Candidate, &TileKey) -> Option<L>,
}

const fn tile(tile: ProjectionTile, split: bool) -> Candidate {
    Candidate::Tile { tile, split }
}

/// The projection's candidates: each tile, alone and with split-K, and Burn's matmul.
const PROJECT_CANDIDATES: Candidates<Tuned> = Candidates {
    list: &[
        tile(ProjectionTile::Block64, false),
        tile(ProjectionTile::Block128, false),
        tile(ProjectionTile::Block64, true),
        tile(ProjectionTile::Block128, true),
        Candidate::Matmul,
    ],
    at: projection_at,
};

/// The candidates the autotuner times for `kernel` (`"project"`, `"update"` or
/// `"recovery"`) at sizes `[a, r, b]` (G row-major, no recovery term) under `limits`, by
/// name: those whose shaders fit the limits and that apply to the sizes.
pub fn tuner_candidates(kernel: &str, [a, r, b]: [usize; 3], limits: Limits) -> Vec<String> {
    let key = TileKey::new(kernel, [a, r, b], false, false, limits);
    let names = |list: &[Candidate], applies: &dyn Fn(Candidate) -> bool| -> Vec<String> {
        list.iter()
            .filter(|&&c| applies(c))
            .map(|c| c.to_string())
            .collect()
    };
    match kernel {
        "project" => names(PROJECT_CANDIDATES.list, &|c| {
            projection_at(c, &key).is_some()
        }),
        "update" => names(UPDATE_CANDIDATES.list, &|c| update_at(c, &key).is_some()),
        _ => names(RECOVERY_CANDIDATES.list, &|c| norms_at(c, &key).is_some()),
    }
}

/// The weight update's candidates: each tile (its shared dimension is r, too short to
/// split), and Burn's ops with its matmul.
const UPDATE_CANDIDATES: Candidates<Tuned> = Candidates {
    list: &[
        tile(ProjectionTile::Block64, false),
        tile(ProjectionTile::Block128, false),
        Candidate::Matmul,
    ],
    at: update_at,
};

/// Recovery scaling's candidates: both column-norm kernels.
const RECOVERY_CANDIDATES: Candidates<ColumnNorms> = Candidates {
    list: &[
        Candidate::Norms(ColumnNorms::PerColumn),
        Candidate::Norms(ColumnNorms::Tiled),
    ],
    at: norms_at,
};

/// What the tuner chose in this process, by key.
static CHOSEN: Mutex<BTreeMap<TileKey, Tuned>> = Mutex::new(BTreeMap::new());

/// Everything the autotuner chose in this process so far, with the shape it was chosen for
/// (for reports: the benchmark prints them).
pub fn tuned_tiles() -> Vec<(TileKey, Tuned)> {
    let chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    chosen.iter().map(|(k, t)| (k.clone(), *t)).collect()
}

/// What the autotuner chose for `kernel` at sizes `[a, r, b]`, in any layout or limits:
/// `None` until a tuned launch of those sizes ran.
fn tuned(kernel: &str, [a, r, b]: [usize; 3]) -> Option<Tuned> {
    // Searched under the lock, nothing cloned: the fused step asks at every step.
    let chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    chosen
        .iter()
        .find(|(k, _)| k.kernel == kernel && [k.a, k.r, k.b] == [a, r, b])
        .map(|(_, t)| *t)
}

/// The tile the autotuner chose for `kernel` (`"project"` or `"update"`) at sizes
/// `[a, r, b]`, in any layout or limits: `None` until a tuned launch of those sizes ran.
pub fn tuned_tile(kernel: &str, sizes: [usize; 3]) -> Option<TunedTile> {
    match tuned(kernel, sizes)? {
        Tuned::Tile(tile) => Some(tile),
        Tuned::Norms(_) | Tuned::Matmul => None,
    }
}

/// What the autotuner chose for `kernel` at sizes `[a, r, b]`, in any layout or limits: a
/// tile, a column-norm kernel or Burn's matmul; `None` until a tuned launch of those sizes
/// ran.
pub fn tuned_choice(kernel: &str, sizes: [usize; 3]) -> Option<Tuned> {
    tuned(kernel, sizes)
}

/// The column-norm kernel the autotuner chose for recovery scaling of G a×b with G̃ r×b
/// (sizes `[a, r, b]`): `None` until a tuned launch of those sizes ran.
pub fn tuned_norms(sizes: [usize; 3]) -> Option<ColumnNorms> {
    match tuned("recovery", sizes)? {
        Tuned::Norms(norms) => Some(norms),
        Tuned::Tile(_) | Tuned::Matmul => None,
    }
}

/// Note what `fastest` names for `key`, the first time it names something.
fn record(key: &TileKey, fastest: impl FnOnce() -> Option<Tuned>) {
    let mut chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    if !chosen.contains_key(key)
        && let Some(tuned) = fastest()
    {
        chosen.insert(key.clone(), tuned);
    }
}

/// The tile a projection or weight update runs with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TileChoice {
    /// The faster [`ProjectionTile`] for the sizes on this device, timed once per shape by
    /// CubeCL's autotuner; 64×64 untimed for products of fewer than
    /// [`TUNED_MIN_MACS`] multiply-adds. The default.
    #[default]
    Tuned,
    /// Always this tile.
    Fixed(ProjectionTile),
    /// Always Burn's own ops (its matmul), the autotuner's other candidate: for measuring,
    /// and for testing that candidate.
    Matmul,
}

impl TileChoice {
    /// The tile to launch for a product of `macs` multiply-adds, or `None` where the
    /// autotuner chooses or Burn's ops are pinned.
    pub fn fixed(self, macs: usize) -> Option<ProjectionTile> {
        match self {
            TileChoice::Fixed(tile) => Some(tile),
            TileChoice::Tuned if macs < TUNED_MIN_MACS => Some(ProjectionTile::Block64),
            TileChoice::Tuned | TileChoice::Matmul => None,
        }
    }
}

impl From<ProjectionTile> for TileChoice {
    fn from(tile: ProjectionTile) -> Self {
        TileChoice::Fixed(tile)
    }
}

/// The column-norm kernel a recovery launch runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NormsChoice {
    /// The faster [`ColumnNorms`] for the sizes on this device, timed once per shape by
    /// CubeCL's autotuner, for the same shapes as the projection's tile
    /// (a·r·b of at least [`TUNED_MIN_MACS`]); [`ColumnNorms::PerColumn`] untimed below.
    /// The default.
    #[default]
    Tuned,
    /// Always this kernel.
    Fixed(ColumnNorms),
}

impl NormsChoice {
    /// The kernel to launch for G a×b and G̃ r×b, or `None` where the autotuner chooses.
    pub fn fixed(self, [a, r, b]: [usize; 3]) -> Option<ColumnNorms> {
        match self {
            NormsChoice::Fixed(norms) => Some(norms),
            NormsChoice::Tuned if a * r * b < TUNED_MIN_MACS => Some(ColumnNorms::PerColumn),
            NormsChoice::Tuned => None,
        }
    }
}

impl From<ColumnNorms> for NormsChoice {
    fn from(norms: ColumnNorms) -> Self {
        NormsChoice::Fixed(norms)
    }
}

/// How a weight update runs: W's layout, the block each workgroup finishes (or the
/// autotuner's choice), and the device limits its launches plan for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateLaunch {
    /// Whether W is stored b×a (the right case of §1).
    pub transposed: bool,
    /// The block of W' per workgroup (the autotuner's choice where [`TileChoice::Tuned`]).
    pub tile: TileChoice,
    /// The limits of the launches.
    pub limits: Limits,
}

impl UpdateLaunch {
    /// The limited update's launch: the tile pinned or the autotuner's choice for the shape
    /// (the caller checked it is a tile), 64×64 where none is known yet.
    pub(super) fn limited(self) -> update::Launch {
        self.with(match self.tile {
            TileChoice::Fixed(tile) => tile,
            _ => ProjectionTile::Block64,
        })
    }

    /// This launch with `tile`.
    fn with(self, tile: ProjectionTile) -> update::Launch {
        update::Launch {
            transposed: self.transposed,
            tile,
            limits: self.limits,
        }
    }
}

/// (G̃, flag) of a projection, as one autotune output.
#[derive(Debug)]
struct Projected(CubeTensor, CubeTensor);

impl AutotuneOutput for Projected {}

/// S, G, the launch limits and the parameter-buffer head (see [`launch_projection`]).
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

/// G̃ = SᵀG with `tile` ([`project::launch`] gives the arguments and result), or where it
/// is [`TileChoice::Tuned`] with the candidate the autotuner finds fastest for these sizes
/// ([`project::launch`] or [`project::launch_split`]).
pub fn launch_projection(
    basis: CubeTensor,
    g: CubeTensor,
    tile: TileChoice,
    limits: Limits,
    head: &[f32],
) -> (CubeTensor, CubeTensor) {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = g.meta.shape()[1];
    if tile == TileChoice::Matmul {
        return project::launch_matmul(basis, g, limits, head);
    }
    if let Some(tile) = tile.fixed(a * r * b) {
        return project::launch(basis, g, tile, limits, head);
    }
    static TUNER: LocalTuner<TileKey, CubeTuneId> = local_tuner!("project");
    let like = g.clone();
    let inputs = (basis, g, limits, head.to_vec());
    let launch = |inputs: ProjectInputs, tuned: Tuned| {
        let (basis, g, limits, head) = inputs;
        let (g_low, flag) = match tuned {
            Tuned::Tile(TunedTile { tile, splits: 1 }) => {
                project::launch(basis, g, tile, limits, &head)
            }
            Tuned::Tile(TunedTile { tile, splits }) => {
                project::launch_split(basis, g, splits, tile, limits, &head)
            }
            Tuned::Matmul | Tuned::Norms(_) => project::launch_matmul(basis, g, limits, &head),
        };
        Projected(g_low, flag)
    };
    let Projected(g_low, flag) = run_tuned(
        &TUNER,
        &like,
        project_key,
        &PROJECT_CANDIDATES,
        inputs,
        launch,
    );
    (g_low, flag)
}

/// S, N, W, the parameter buffer, the recovery inputs (G, ψ, G̃) and the launch (see
/// [`launch_update`]).
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

/// The fused weight update ([`update::launch`]) with `how.tile`, or where it is
/// [`TileChoice::Tuned`] with the tile the autotuner finds faster for these sizes. The
/// candidates write W' to buffers of their own, so timing them leaves W as it is.
pub fn launch_update(
    basis: CubeTensor,
    normalized: CubeTensor,
    weight: CubeTensor,
    scalars: CubeTensor,
    recovery: Option<(CubeTensor, CubeTensor, CubeTensor)>,
    how: UpdateLaunch,
) -> CubeTensor {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = normalized.meta.shape()[1];
    if how.tile == TileChoice::Matmul {
        let transposed = how.transposed;
        return update::launch_matmul(basis, normalized, weight, scalars, recovery, transposed);
    }
    if let Some(tile) = how.tile.fixed(a * r * b) {
        return update::launch(basis, normalized, weight, scalars, recovery, how.with(tile));
    }
    static TUNER: LocalTuner<TileKey, CubeTuneId> = local_tuner!("update");
    let like = weight.clone();
    let inputs = (basis, normalized, weight, scalars, recovery, how);
    let launch = |inputs: UpdateInputs, tuned: Tuned| {
        let (basis, normalized, weight, scalars, recovery, how) = inputs;
        match tuned {
            Tuned::Tile(tuned) => update::launch(
                basis,
                normalized,
                weight,
                scalars,
                recovery,
                how.with(tuned.tile),
            ),
            Tuned::Matmul | Tuned::Norms(_) => {
                update::launch_matmul(basis, normalized, weight, scalars, recovery, how.transposed)
            }
        }
    };
    run_tuned(
        &TUNER,
        &like,
        update_key,
        &UPDATE_CANDIDATES,
        inputs,
        launch,
    )
}

/// (ψ, Λ_prev') of recovery scaling, as one autotune output.
#[derive(Debug)]
struct Scales(CubeTensor, CubeTensor);

impl AutotuneOutput for Scales {}

/// G, G̃, N, the parameter buffer, the previous norm and the launch limits (see
/// [`launch_recovery`]).
type RecoveryInputs = (
    CubeTensor,
    CubeTensor,
    CubeTensor,
    CubeTensor,
    Option<CubeTensor>,
    Limits,
);

fn recovery_key((grad, g_low, _, _, _, limits): &RecoveryInputs) -> TileKey {
    let (a, b) = (grad.meta.shape()[0], grad.meta.shape()[1]);
    let r = g_low.meta.shape()[0];
    let limits = *limits;
    // Read in place only where one launch takes every row (`launch::stored_gradient`).
    let whole = recovery::plan(a, r, b, limits) == Some(a);
    TileKey::new(
        "recovery",
        [a, r, b],
        whole && is_transposed_view(grad),
        false,
        limits,
    )
}

/// Recovery scaling's (ψ, Λ_prev') ([`recovery::launch_with`]) with the column-norm kernel
/// `norms`, or where it is [`NormsChoice::Tuned`] with the one the autotuner finds faster
/// for these sizes. The candidates write ψ, Λ_prev' and their partial sums to buffers of
/// their own.
pub fn launch_recovery(
    grad: CubeTensor,
    g_low: CubeTensor,
    normalized: CubeTensor,
    params: CubeTensor,
    previous: Option<CubeTensor>,
    limits: Limits,
    norms: NormsChoice,
) -> (CubeTensor, CubeTensor) {
    let (a, b) = (grad.meta.shape()[0], grad.meta.shape()[1]);
    let r = g_low.meta.shape()[0];
    if let Some(norms) = norms.fixed([a, r, b]) {
        return recovery::launch_with(grad, g_low, normalized, params, previous, limits, norms);
    }
    static TUNER: LocalTuner<TileKey, CubeTuneId> = local_tuner!("recovery");
    let like = grad.clone();
    let inputs = (grad, g_low, normalized, params, previous, limits);
    let launch = |inputs: RecoveryInputs, norms: ColumnNorms| {
        let (grad, g_low, normalized, params, previous, limits) = inputs;
        let (psi, norm) =
            recovery::launch_with(grad, g_low, normalized, params, previous, limits, norms);
        Scales(psi, norm)
    };
    let Scales(psi, norm) = run_tuned(
        &TUNER,
        &like,
        recovery_key,
        &RECOVERY_CANDIDATES,
        inputs,
        launch,
    );
    (psi, norm)
}

/// `launch(inputs, tuned)` with the candidate `tuner` finds fastest for `key_of(inputs)` on
/// `like`'s device: each of `candidates` that applies to the key is timed on clones of
/// `inputs` the first time a key is seen (one that does not apply reports an error, which
/// the tuner skips).
fn run_tuned<I, Out, L>(
    tuner: &'static LocalTuner<TileKey, CubeTuneId>,
    like: &CubeTensor,
    key_of: fn(&I) -> TileKey,
    candidates: &'static Candidates<L>,
    inputs: I,
    launch: fn(I, L) -> Out,
) -> Out
where
    I: Clone + Send + Sync + 'static,
    Out: AutotuneOutput,
    L: Into<Tuned> + 'static,
{
    let client = like.client.clone();
    let id = CubeTuneId::new(&client, &like.device);
    let at = candidates.at;
    let set = tuner.init(&id, move || {
        let set = TunableSet::<_, I, _, _>::new_cloning_inputs(key_of);
        candidates.list.iter().fold(set, |set, &candidate| {
            set.with(Tunable::identified(candidate, move |inputs: I| {
                let tuned = at(candidate, &key_of(&inputs))
                    .ok_or_else(|| format!("{candidate}: not for these sizes"))?;
                Ok::<_, String>(launch(inputs, tuned))
            }))
        })
    });
    let key = key_of(&inputs);
    let out = tuner.execute(&id, &client, set.clone(), inputs);
    record(&key, || {
        let fastest = tuner.fastest_identity(&id, &set, &key)?;
        at(fastest, &key).map(Into::into)
    });
    out
}
