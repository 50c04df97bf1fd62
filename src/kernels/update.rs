//! Launch of `shaders/update.wgsl` (and its 128×128-tile variant `update_wide.wgsl`):
//! W ← d·(W − α·(S·L + G⊙ψ)), L = s·N − k·G̃⊙ψ.

use burn::backend::get_device_settings;
use burn::backend::ops::{BoolTensorOps, FloatTensorOps};
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{Shape, Slice};

use super::fit::fits;
use super::launch::{
    self, BLOCK, Limits, Templated, assert_f32_on_wgsl, chunk_rows, column_groups_of,
    contiguous_transpose, empty_f32, is_transposed_view, row_chunk,
};
use super::project::ProjectionTile;

// Each tile's kernel with the elements of L and the finish of W' both share appended.
const SHADER: &str = concat!(
    include_str!("../../shaders/update.wgsl"),
    include_str!("../../shaders/update_tiles.wgsl")
);
const SHADER_WIDE: &str = concat!(
    include_str!("../../shaders/update_wide.wgsl"),
    include_str!("../../shaders/update_tiles.wgsl")
);

/// How one update launch runs: W's layout, the tile and the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Whether W is stored b×a (the right case of §1).
    pub transposed: bool,
    /// The block of W' per workgroup.
    pub tile: ProjectionTile,
    /// The limits of the launches.
    pub limits: Limits,
}

const RECOVERY_BINDINGS: &str = "@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> psi: array<f32>;
@group(0) @binding(7) var<storage, read_write> g_low: array<f32>;
fn psi_at(j: u32) -> f32 {
    return psi[j];
}";
const RECOVERY_LOW: &str = "    lv = lv - kept * (g_low[at] * psi_at(j));";
const RECOVERY_TERM: &str = "                u = u + grad[at] * psi_at(j);";

/// The limited variant's bindings and limiter (see `update.wgsl`'s header), with its own
/// placeholders `{{phi_at}}`, `{{partials}}`, `{{previous}}` and `{{has_previous}}`, which
/// [`kernel_with`] fills before the shader's template.
const LIMITED_BINDINGS: &str = "@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(7) var<storage, read_write> g_low: array<f32>;
@group(0) @binding(8) var<storage, read_write> norm: array<f32>;
{{previous}}
const PHI_AT: u32 = {{phi_at}}u;
const PARTIALS: u32 = {{partials}}u;
const HAS_PREVIOUS: bool = {{has_previous}};
var<private> factor: f32 = 1.0;
fn psi_at(j: u32) -> f32 {
    return scratch[PHI_AT + j] * factor;
}
// ‖Λ‖ from adam_recovery.wgsl's partial sums, the limiter f into `factor`, and (`writer`)
// Λ_prev' = f·‖Λ‖, or Λ_prev where the step is skipped.
fn limit(writer: bool, step: bool, growth_limit: f32) {
    var total: f32 = 0.0;
    for (var w: u32 = 0u; w < PARTIALS; w = w + 1u) {
        total = total + scratch[PHI_AT + B + w];
    }
    let lambda = sqrt(total);
    if (HAS_PREVIOUS) {
        factor = min(previous[0] * growth_limit / max(lambda, 1e-30), 1.0);
    }
    if (writer) {
        var kept_norm = lambda * factor;
        if (HAS_PREVIOUS && !step) {
            kept_norm = previous[0];
        }
        norm[0] = kept_norm;
    }
}";
/// The limited variant's prologue in `main`: ζ is slot 7 of the parameter buffer.
const LIMITED_PROLOGUE: &str =
    "    limit(J_BLOCK == 0u && wid.x == 0u && wid.y == 0u && t == 0u, step, scalars[7]);";
const PREVIOUS_BINDING: &str =
    "@group(0) @binding(9) var<storage, read_write> previous: array<f32>;";
const NO_PREVIOUS: &str = "var<private> previous: array<f32, 1>;";

/// The recovery term an update kernel applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Term {
    /// None: W' = d·(W − α·s·S·N).
    Plain,
    /// G⊙ψ with ψ given (`recovery_limit.wgsl`'s).
    Scales,
    /// G⊙ψ with ψ = f·φ formed in the kernel from `adam_recovery.wgsl`'s scratch, over
    /// `partials` workgroup sums, with or without a previous norm.
    Limited { partials: usize, previous: bool },
}

/// The update shader of `tile` over `rows` rows of W (a×b at rank r; stored b×a where
/// `transposed`), from column block `j_block` on, with the recovery term where `recovery`.
pub(super) fn kernel(
    tile: ProjectionTile,
    sizes: [usize; 3],
    transposed: bool,
    j_block: usize,
    recovery: bool,
) -> Templated {
    let term = if recovery { Term::Scales } else { Term::Plain };
    kernel_with(tile, sizes, transposed, j_block, term)
}

/// [`kernel`] with any recovery [`Term`].
pub(super) fn kernel_with(
    tile: ProjectionTile,
    [rows, r, b]: [usize; 3],
    transposed: bool,
    j_block: usize,
    term: Term,
) -> Templated {
    let (name, source) = match tile {
        ProjectionTile::Block64 => ("update", SHADER),
        ProjectionTile::Block128 => ("update_wide", SHADER_WIDE),
    };
    let (bindings, low, finish, prologue) = match term {
        Term::Plain => (String::new(), "", "", ""),
        Term::Scales => (
            RECOVERY_BINDINGS.to_string(),
            RECOVERY_LOW,
            RECOVERY_TERM,
            "",
        ),
        // The template is filled in one pass, so the limiter's own values go in here.
        Term::Limited { partials, previous } => (
            LIMITED_BINDINGS
                .replace("{{phi_at}}", &super::adam::PHI_AT.to_string())
                .replace("{{partials}}", &partials.to_string())
                .replace("{{has_previous}}", &previous.to_string())
                .replace(
                    "{{previous}}",
                    if previous {
                        PREVIOUS_BINDING
                    } else {
                        NO_PREVIOUS
                    },
                ),
            RECOVERY_LOW,
            RECOVERY_TERM,
            LIMITED_PROLOGUE,
        ),
    };
    Templated::new(name, source)
        .with("a", rows)
        .with("r", r)
        .with("b", b)
        .with("transposed", transposed)
        .with("j_block", j_block)
        .with("recovery_bindings", bindings)
        .with("recovery_low", low)
        .with("recovery_term", finish)
        .with("recovery_prologue", prologue)
        // Not read by the shader: names the variant in labels (kernels::shader_expansions).
        .with(
            "term",
            match term {
                Term::Plain => "plain",
                Term::Scales => "scales",
                Term::Limited { .. } => "limited",
            },
        )
}

/// Whether the update shader of `tile`, with the recovery term where `recovery`, fits the
/// adapter's `limits` (5 storage buffers, 8 with the recovery term).
pub fn tile_fits(tile: ProjectionTile, recovery: bool, limits: Limits) -> bool {
    fits(&kernel(tile, [BLOCK, 1, 1], false, 0, recovery), limits)
}

/// Rows per launch for the update of an a×b matrix at rank r under `limits`, or `None`
/// when the kernel cannot run these sizes (L over the binding limit, a transposed W over it,
/// fewer than 64 rows fitting, a row chunk over the workgroup limit of 64-row blocks, or the
/// 64×64 tile's shader, with the recovery term where `recovery`, past the adapter's
/// limits). Columns past the workgroup limit are split over several launches. The sizes
/// hold for both tiles ([`ProjectionTile`]): the 128×128 one needs fewer workgroups; whether
/// its shader fits is [`tile_fits`].
pub fn plan(
    a: usize,
    r: usize,
    b: usize,
    transposed: bool,
    recovery: bool,
    limits: Limits,
) -> Option<usize> {
    if !tile_fits(ProjectionTile::Block64, recovery, limits) {
        return None;
    }
    let limit = limits.max_binding_bytes;
    let rows = if transposed {
        // W is b×a: a row chunk of the canonical layout is not contiguous in it.
        (a * r.max(b) * 4 <= limit).then_some(a)
    } else {
        chunk_rows(a, r.max(b), limit)
    };
    rows.filter(|rows| r * b * 4 <= limit && rows.div_ceil(BLOCK) <= limits.max_workgroups)
}

/// W' = d·(W − α·(S·L + G⊙ψ)), L = s·N − k·G̃⊙ψ, from the parameter buffer
/// `scalars` (α, d, s, k, flag; `step_buffer.rs`);
/// `recovery` holds (G, ψ, G̃) when recovery scaling is on. S, W and G over the binding
/// limit are updated in row chunks (left layout only). The caller (the WGSL route's `Ops::update`) has
/// checked the runtime, the dtypes and [`plan`]. W's layout, the tile and the limits come
/// from `how`.
pub fn launch(
    basis: CubeTensor,
    normalized: CubeTensor,
    weight: CubeTensor,
    scalars: CubeTensor,
    recovery: Option<(CubeTensor, CubeTensor, CubeTensor)>,
    how: Launch,
) -> CubeTensor {
    let Launch {
        transposed,
        tile,
        limits,
    } = how;
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = normalized.meta.shape()[1];
    let rows = plan(a, r, b, transposed, recovery.is_some(), limits)
        .expect("update: sizes the kernel cannot run");
    let inputs: Vec<&CubeTensor> = [&basis, &normalized, &weight, &scalars]
        .into_iter()
        .chain(recovery.iter().flat_map(|(g, p, l)| [g, p, l]))
        .collect();
    assert_f32_on_wgsl("update", &inputs);
    let [basis, normalized, weight, scalars] =
        [basis, normalized, weight, scalars].map(into_contiguous);
    let client = weight.client.clone();
    let output = empty_f32(&weight, Shape::from(weight.meta.shape().to_vec()));
    // G in W's layout, so that the right case's G = ∇Wᵀ is read in place.
    let in_place = transposed
        && recovery
            .as_ref()
            .is_some_and(|(g, _, _)| is_transposed_view(g));
    let recovery = recovery.map(|(g, p, l)| {
        let g = in_weight_layout(g, transposed);
        (g, into_contiguous(p), into_contiguous(l))
    });
    let side = tile.side();
    for k0 in (0..a).step_by(rows) {
        let k1 = (k0 + rows).min(a);
        let slice = |t: &CubeTensor, width: usize| row_chunk(t, k0..k1, a, width);
        let mut buffers = vec![
            slice(&basis, r),
            normalized.handle.clone().binding(),
            slice(&weight, b),
            slice(&output, b),
            scalars.handle.clone().binding(),
        ];
        if let Some((grad, psi, g_low)) = &recovery {
            buffers.push(slice(grad, b));
            buffers.push(psi.handle.clone().binding());
            buffers.push(g_low.handle.clone().binding());
        }
        for (j_block, blocks) in column_groups_of(b, side, limits) {
            let kernel = kernel(
                tile,
                [k1 - k0, r, b],
                transposed,
                j_block,
                recovery.is_some(),
            );
            crate::launches::count_launch("update", [a, r, b]);
            if in_place {
                crate::launches::count_launch("update: Gᵀ in place", [a, r, b]);
            }
            if tile == ProjectionTile::Block128 {
                crate::launches::count_launch("update: 128×128 tiles", [a, r, b]);
            }
            launch::launch(
                &client,
                kernel,
                CubeDim::new_2d(16, 16),
                CubeCount::Static(blocks as u32, (k1 - k0).div_ceil(side) as u32, 1),
                buffers.clone(),
                limits,
            );
        }
    }
    output
}

/// G (a×b, canonical) in W's layout, row-major: the right case's G = ∇Wᵀ (a transposed
/// view) is then ∇W's own buffer, read in place, not a copy.
fn in_weight_layout(g: CubeTensor, transposed: bool) -> CubeTensor {
    if transposed {
        contiguous_transpose(g)
    } else {
        into_contiguous(g)
    }
}

/// Whether the limited update (recovery scaling's limiter fused in, after
/// `adam_recovery.wgsl`) runs W a×b at rank r under `limits`: in one launch (no row chunks,
/// one column group, so that one workgroup writes the norm) with its 9 bindings (10 with a
/// previous norm) within the adapter's.
pub fn limited_plan(
    tile: ProjectionTile,
    [a, r, b]: [usize; 3],
    transposed: bool,
    previous: bool,
    limits: Limits,
) -> bool {
    let term = Term::Limited {
        partials: super::adam::recovery_partials(b),
        previous,
    };
    plan(a, r, b, transposed, true, limits) == Some(a)
        && column_groups_of(b, tile.side(), limits).len() == 1
        && fits(&kernel_with(tile, [BLOCK, 1, 1], false, 0, term), limits)
}

/// (W', Λ_prev') of the update with recovery scaling's limiter fused in: ψ = f·φ formed in
/// each workgroup from `scratch` ([`super::adam::launch_recovery`]'s φ and partial sums) and
/// `previous` (Λ_prev), by blocks of `tile` (the tuner's choice for the unfused update).
/// `scalars` is the step's parameter buffer (ζ, α, d, s, k, the flag). The caller has
/// checked the runtime, the dtypes and [`limited_plan`].
#[allow(clippy::too_many_arguments)]
pub fn launch_limited(
    basis: CubeTensor,
    normalized: CubeTensor,
    weight: CubeTensor,
    scalars: CubeTensor,
    grad: CubeTensor,
    scratch: CubeTensor,
    g_low: CubeTensor,
    previous: Option<CubeTensor>,
    how: Launch,
) -> (CubeTensor, CubeTensor) {
    let Launch {
        transposed,
        tile,
        limits,
    } = how;
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = normalized.meta.shape()[1];
    assert!(
        limited_plan(tile, [a, r, b], transposed, previous.is_some(), limits),
        "update (limited): sizes or limits the kernel cannot run"
    );
    let inputs: Vec<&CubeTensor> = [
        &basis,
        &normalized,
        &weight,
        &scalars,
        &grad,
        &scratch,
        &g_low,
    ]
    .into_iter()
    .chain(previous.as_ref())
    .collect();
    assert_f32_on_wgsl("update", &inputs);
    let [basis, normalized, weight, scalars, scratch, g_low] =
        [basis, normalized, weight, scalars, scratch, g_low].map(into_contiguous);
    let grad = in_weight_layout(grad, transposed);
    let output = empty_f32(&weight, Shape::from(weight.meta.shape().to_vec()));
    let norm = empty_f32(&weight, Shape::from([1]));
    let term = Term::Limited {
        partials: super::adam::recovery_partials(b),
        previous: previous.is_some(),
    };
    let mut buffers = vec![
        basis.handle.clone().binding(),
        normalized.handle.clone().binding(),
        weight.handle.clone().binding(),
        output.handle.clone().binding(),
        scalars.handle.clone().binding(),
        grad.handle.clone().binding(),
        scratch.handle.clone().binding(),
        g_low.handle.clone().binding(),
        norm.handle.clone().binding(),
    ];
    buffers.extend(previous.map(|p| into_contiguous(p).handle.binding()));
    crate::launches::count_launch("update", [a, r, b]);
    crate::launches::count_launch("update: limited", [a, r, b]);
    if tile == ProjectionTile::Block128 {
        crate::launches::count_launch("update: 128×128 tiles", [a, r, b]);
    }
    launch::launch(
        &weight.client,
        kernel_with(tile, [a, r, b], transposed, 0, term),
        CubeDim::new_2d(16, 16),
        CubeCount::Static(
            b.div_ceil(tile.side()) as u32,
            a.div_ceil(tile.side()) as u32,
            1,
        ),
        buffers,
        limits,
    );
    (output, norm)
}

/// The same update by Burn's own ops (its matmul for S·L, elementwise ops for the rest, the
/// skip as a select): the autotuner's candidate next to the WGSL tiles, so that the tuned
/// update is never slower than Burn's ops. It forms S·L (a×b) where the kernels do not, and
/// reads nothing back: α, d, s, k and the flag stay in `scalars` on the device.
pub fn launch_matmul(
    basis: CubeTensor,
    normalized: CubeTensor,
    weight: CubeTensor,
    scalars: CubeTensor,
    recovery: Option<(CubeTensor, CubeTensor, CubeTensor)>,
    transposed: bool,
) -> CubeTensor {
    type B = CubeBackend;
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = normalized.meta.shape()[1];
    let inputs: Vec<&CubeTensor> = [&basis, &normalized, &weight, &scalars]
        .into_iter()
        .chain(recovery.iter().flat_map(|(g, p, l)| [g, p, l]))
        .collect();
    assert_f32_on_wgsl("update: Burn matmul", &inputs);
    crate::launches::count_launch("update: Burn matmul", [a, r, b]);
    let bool_dtype = get_device_settings::<B>(&weight.device).bool_dtype;
    // The parameter buffer's slot `i` as a 1×1 tensor (src/route/step_buffer.rs: α, d, s, k at 8–11,
    // the flag at 13).
    let slot = |i: usize| {
        let one = B::float_slice(
            scalars.clone(),
            &[Slice::new(i as isize, Some(i as isize + 1), 1)],
        );
        B::float_reshape(one, Shape::from([1, 1]))
    };
    let (alpha, decay, scale, kept) = (slot(8), slot(9), slot(10), slot(11));
    // L = s·N − k·G̃⊙ψ and the recovery term G⊙ψ (ψ 1×b, broadcast over rows).
    let mut low = B::float_mul(normalized, scale);
    let mut term = None;
    if let Some((grad, psi, g_low)) = recovery {
        let low_psi = B::float_mul(B::float_mul(g_low, psi.clone()), kept);
        low = B::float_sub(low, low_psi);
        term = Some(B::float_mul(grad, psi));
    }
    let mut u = B::float_matmul(basis, low);
    if let Some(term) = term {
        u = B::float_add(u, term);
    }
    let canonical = if transposed {
        B::float_swap_dims(weight, 0, 1)
    } else {
        weight
    };
    let updated = B::float_mul(
        B::float_sub(canonical.clone(), B::float_mul(u, alpha)),
        decay,
    );
    let skip = B::float_equal_elem(slot(13), 0.0.into(), bool_dtype);
    let skip = B::bool_expand(skip, Shape::from([a, b]));
    let out = B::float_mask_where(updated, skip, canonical);
    if transposed {
        into_contiguous(B::float_swap_dims(out, 0, 1))
    } else {
        into_contiguous(out)
    }
}
