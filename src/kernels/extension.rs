//! The [`SubTrackKernels`] backend extension: one operation per WGSL launch, implemented
//! for Burn's CubeCL backend (the launchers beside this file) and, through
//! `backend_extension`, for its fusion layer, so the kernels run with fusion on.

use burn::backend::Backend;
use burn::backend::backend_extension;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::CubeBackend;
use burn::tensor::Shape;

use super::launch::Limits;
use super::project::{ProjectionTile, projected_shape};
use super::tune::{self, NormsChoice, TileChoice, UpdateLaunch};
use super::{adam, project, tracking, update};

/// Operations with a WGSL implementation. The `params` of Adam and recovery and the
/// `scalars` of the update are the parameter buffer (\[14\], layout in `step_buffer.rs`), whose
/// last slot is the step flag (1 = step, 0 = skip), so that a skip decided on the device
/// needs no read-back; the tracking ops' `params` are their own, flag last.
#[backend_extension(Cube, Fusion)]
pub trait SubTrackKernels: Backend {
    /// (G̃ = SᵀG, flag): `basis` a×r, `g` a×b → r×b (docs/algorithm.md §2, canonical left
    /// layout), and the step flag \[1\] (0 where G holds NaN or ±∞). S and G over the binding
    /// limit of `limits` are split into row chunks, columns past its workgroup limit into
    /// several launches; each workgroup computes a block of `tile` (tuned per shape, or
    /// fixed). The flag comes after `head` in one tensor (\[1\] for an empty `head`): the
    /// kernel leaves `head` as it is.
    #[fusion(meta = |s, g, _t, _l, h| (
        TensorSpec::new(projected_shape(&s.shape, &g.shape), g.dtype),
        TensorSpec::new(Shape::from([h.len() + 1]), g.dtype),
    ))]
    fn wgsl_project(
        basis: FloatTensor<Self>,
        g: FloatTensor<Self>,
        tile: TileChoice,
        limits: Limits,
        head: Vec<f32>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Split-K projection: (SᵀG as the sum of `splits` partial products, `head` and the
    /// flag), by blocks of `tile`.
    #[fusion(meta = |s, g, _k, _t, h| (
        TensorSpec::new(projected_shape(&s.shape, &g.shape), g.dtype),
        TensorSpec::new(Shape::from([h.len() + 1]), g.dtype),
    ))]
    fn wgsl_project_split(
        basis: FloatTensor<Self>,
        g: FloatTensor<Self>,
        splits: usize,
        tile: ProjectionTile,
        head: Vec<f32>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Low-rank Adam (§2): (M', V', N) from M, V, G̃ (r×b) and `params` (β1, 1−β1, β2,
    /// 1−β2, ε, v_scale, moved, flag).
    #[fusion(meta = |m, _v, _g, _p, _l| (m.clone(), m.clone(), m.clone()))]
    fn wgsl_adam(
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        params: FloatTensor<Self>,
        limits: Limits,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// [`wgsl_adam`](SubTrackKernels::wgsl_adam) after rotating M and V with C = S_newᵀ·S_old
    /// (r×r, §5) where `moved` (in `params`) is 1.
    #[fusion(meta = |m, _v, _g, _p, _c, _l| (m.clone(), m.clone(), m.clone()))]
    fn wgsl_adam_rotate(
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        params: FloatTensor<Self>,
        change: FloatTensor<Self>,
        limits: Limits,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Low-rank Adam fused with recovery scaling's column norms (§2, §7), for steps whose
    /// basis did not move: (M', V', N, scratch) from G (a×b), M, V, G̃ (r×b) and `params`
    /// (Adam's values, 2k − k², flag); scratch holds φ and the workgroups' sums of
    /// ‖Λ[:, j]‖² for [`wgsl_update_limited`](SubTrackKernels::wgsl_update_limited).
    #[fusion(meta = |_g, m, _v, _l, _p, _lim| (
        m.clone(),
        m.clone(),
        m.clone(),
        TensorSpec::new(Shape::from([scratch_len(m.shape[1])]), m.dtype),
    ))]
    fn wgsl_adam_recovery(
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        params: FloatTensor<Self>,
        limits: Limits,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );

    /// (W', Λ_prev') of the update with the limiter fused in (§2, §7): ψ = f·φ from
    /// `scratch`, without a previous norm (f = 1). `scalars`: ζ, α, d, s, k, flag.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |_s, _n, w, _p, _g, _x, _l, _h| (
        w.clone(),
        TensorSpec::new(Shape::from([1]), w.dtype),
    ))]
    fn wgsl_update_limited(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scratch: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        how: UpdateLaunch,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`wgsl_update_limited`](SubTrackKernels::wgsl_update_limited) against `previous` =
    /// Λ_prev (\[1\]).
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |_s, _n, w, _p, _g, _x, _l, _q, _h| (
        w.clone(),
        TensorSpec::new(Shape::from([1]), w.dtype),
    ))]
    fn wgsl_update_limited_previous(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scratch: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        previous: FloatTensor<Self>,
        how: UpdateLaunch,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Recovery scales (§7) without a previous norm: (ψ 1×b, ‖Λ‖ \[1\]) from G (a×b), G̃ and
    /// N (r×b) and `params` (2k − k², ζ, flag). G over the binding limit of `limits` is read in row
    /// chunks. `norms`: the column-norm kernel, tuned per shape or fixed (see
    /// [`set_recovery_norms`](super::set_recovery_norms)).
    #[fusion(meta = |g, _l, _n, _p, _m, _t| recovery_meta(g, _l, _n, _p, _m))]
    fn wgsl_recovery(
        grad: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        params: FloatTensor<Self>,
        limits: Limits,
        norms: NormsChoice,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`wgsl_recovery`](SubTrackKernels::wgsl_recovery) with the norm-growth limiter
    /// against `previous` = Λ_prev (\[1\]).
    #[fusion(meta = |g, _l, _n, _p, _q, _m, _t| recovery_meta(g, _l, _n, _p, _m))]
    fn wgsl_recovery_limited(
        grad: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        params: FloatTensor<Self>,
        previous: FloatTensor<Self>,
        limits: Limits,
        norms: NormsChoice,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// W' = d·(W − α·s·S·N) (§2): `basis` a×r, `normalized` r×b, `weight` a×b or b×a
    /// (`how.transposed`), `scalars` (α, d, s, k, flag); blocks of `how.tile`.
    #[fusion(dtype = weight, shape = weight)]
    fn wgsl_update(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        how: UpdateLaunch,
    ) -> FloatTensor<Self>;

    /// W' = d·(W − α·(S·L + G⊙ψ)), L = s·N − k·G̃⊙ψ (§2 with §7 folded in): `grad` a×b,
    /// `psi` 1×b, `g_low` r×b.
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = weight, shape = weight)]
    fn wgsl_update_recovery(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        psi: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        how: UpdateLaunch,
    ) -> FloatTensor<Self>;

    /// out = X·Yᵀ (X m×k, Y n×k → m×n): G·Aᵀ, A·Aᵀ and the re-orthonormalisation
    /// products of the tracking step (§4). X over `max_binding_bytes` is split into row
    /// chunks.
    #[fusion(dtype = x, shape = Shape::from([x[0], y[0]]))]
    fn wgsl_product(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        max_binding_bytes: usize,
    ) -> FloatTensor<Self>;

    /// The top singular triplet of ∇F and the geodesic angle (§4): [v (r), σ, θ, cos θ,
    /// sin θ, moved] from P = ∇Fᵀ∇F, its normalised power Q (r×r) and `params`
    /// [η, θ_max (< 0: none), floor, ‖G‖²_F, flag].
    #[fusion(dtype = normal, shape = Shape::from([normal[0] + 5]))]
    fn wgsl_top_singular(
        normal: FloatTensor<Self>,
        powered: FloatTensor<Self>,
        params: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The geodesic update (§4): (S', C = S'ᵀS) from S and ∇F (a×r) and the triplet.
    #[fusion(meta = |s, _f, _t| (s.clone(), TensorSpec::new(Shape::from([s.shape[1], s.shape[1]]), s.dtype)))]
    fn wgsl_geodesic_step(
        basis: FloatTensor<Self>,
        tangent: FloatTensor<Self>,
        triplet: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Re-orthonormalisation (§4): (F, status) from S'ᵀS' (r×r) and `params` \[tol\]; F = L⁻¹
    /// of its Cholesky factor when the drift exceeds tol (status 1), else I (status 0).
    #[fusion(meta = |g, _p| (g.clone(), TensorSpec::new(Shape::from([1]), g.dtype)))]
    fn wgsl_reorthonormalize(
        gram: FloatTensor<Self>,
        params: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Length of the fused Adam's scratch buffer for b columns.
fn scratch_len(b: usize) -> usize {
    adam::PHI_AT + b + adam::recovery_partials(b)
}

/// Output specs of the recovery kernels: ψ [1, b] and the norm \[1\].
fn recovery_meta(
    grad: &TensorSpec,
    _g_low: &TensorSpec,
    _normalized: &TensorSpec,
    _params: &TensorSpec,
    _limits: &Limits,
) -> (TensorSpec, TensorSpec) {
    (
        TensorSpec::new(Shape::from([1, grad.shape[1]]), grad.dtype),
        TensorSpec::new(Shape::from([1]), grad.dtype),
    )
}

impl SubTrackKernels for CubeBackend {
    fn wgsl_project(
        basis: FloatTensor<Self>,
        g: FloatTensor<Self>,
        tile: TileChoice,
        limits: Limits,
        head: Vec<f32>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        tune::launch_projection(basis, g, tile, limits, &head)
    }

    fn wgsl_project_split(
        basis: FloatTensor<Self>,
        g: FloatTensor<Self>,
        splits: usize,
        tile: ProjectionTile,
        head: Vec<f32>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        project::launch_split(basis, g, splits, tile, Limits::WEBGPU, &head)
    }

    fn wgsl_adam(
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        params: FloatTensor<Self>,
        limits: Limits,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        adam::launch(moment_1, moment_2, g_low, params, None, limits)
    }

    fn wgsl_adam_recovery(
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        params: FloatTensor<Self>,
        limits: Limits,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        adam::launch_recovery(grad, moment_1, moment_2, g_low, params, limits)
    }

    fn wgsl_update_limited(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scratch: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        how: UpdateLaunch,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        update::launch_limited(
            basis,
            normalized,
            weight,
            scalars,
            grad,
            scratch,
            g_low,
            None,
            how.limited(),
        )
    }

    fn wgsl_update_limited_previous(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scratch: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        previous: FloatTensor<Self>,
        how: UpdateLaunch,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        update::launch_limited(
            basis,
            normalized,
            weight,
            scalars,
            grad,
            scratch,
            g_low,
            Some(previous),
            how.limited(),
        )
    }

    fn wgsl_adam_rotate(
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        params: FloatTensor<Self>,
        change: FloatTensor<Self>,
        limits: Limits,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        adam::launch(moment_1, moment_2, g_low, params, Some(change), limits)
    }

    fn wgsl_recovery(
        grad: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        params: FloatTensor<Self>,
        limits: Limits,
        norms: NormsChoice,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        tune::launch_recovery(grad, g_low, normalized, params, None, limits, norms)
    }

    fn wgsl_recovery_limited(
        grad: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        params: FloatTensor<Self>,
        previous: FloatTensor<Self>,
        limits: Limits,
        norms: NormsChoice,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        tune::launch_recovery(
            grad,
            g_low,
            normalized,
            params,
            Some(previous),
            limits,
            norms,
        )
    }

    fn wgsl_update(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        how: UpdateLaunch,
    ) -> FloatTensor<Self> {
        tune::launch_update(basis, normalized, weight, scalars, None, how)
    }

    fn wgsl_update_recovery(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        psi: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        how: UpdateLaunch,
    ) -> FloatTensor<Self> {
        let recovery = Some((grad, psi, g_low));
        tune::launch_update(basis, normalized, weight, scalars, recovery, how)
    }

    fn wgsl_product(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        max_binding_bytes: usize,
    ) -> FloatTensor<Self> {
        tracking::product(x, y, max_binding_bytes)
    }

    fn wgsl_top_singular(
        normal: FloatTensor<Self>,
        powered: FloatTensor<Self>,
        params: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        tracking::top_singular(normal, powered, params)
    }

    fn wgsl_geodesic_step(
        basis: FloatTensor<Self>,
        tangent: FloatTensor<Self>,
        triplet: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        tracking::geodesic_step(basis, tangent, triplet)
    }

    fn wgsl_reorthonormalize(
        gram: FloatTensor<Self>,
        params: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        tracking::reorthonormalize(gram, params)
    }
}
