//! Section 4 (wgpu only): the WGSL kernels against the portable path on the same device.

use std::time::Instant;

use burn::optim::ModuleOptimizer;
use burn::tensor::{Distribution, Tensor};
use subtrack::SubTrackConfig;
use subtrack::testing::kernels::{self, ColumnNorms, NormsChoice, ProjectionTile, TileChoice};
use subtrack::testing::route::{self, RecoveryInputs, RouteRequest};
use subtrack::testing::{basis, geodesic};
use subtrack_llama::device::Picked;
use subtrack_llama::{Llama, LlamaConfig, TrainConfig};

use crate::{Grads, median, sync};

/// One optimizer of section 4's step comparison: its model (taken out while it steps), the
/// fixed gradients, the optimizer and its timed repetitions (ms per step).
struct StepRun {
    model: Option<Llama>,
    grads: Grads,
    optim: ModuleOptimizer,
    times: Vec<f64>,
}

pub(crate) struct KernelRow {
    pub(crate) what: String,
    pub(crate) kernel_ms: f64,
    pub(crate) portable_ms: f64,
    pub(crate) flops: f64,
}

/// How section 4 times a call: `reps` repetitions of `batch` back-to-back calls (their
/// outputs kept alive, so none is skipped) and one device sync, divided by `batch`, after a
/// warm-up call; the median.
struct Timer<'a> {
    picked: &'a Picked,
    reps: usize,
    batch: usize,
}

impl Timer<'_> {
    /// Median ms per call of `f`, `batch` calls per sync.
    fn timed(&self, f: &dyn Fn() -> Tensor<2>, batch: usize) -> f64 {
        let dev = &self.picked.device;
        sync(&f()); // warm-up: compiles (and, for Burn's matmul, autotunes)
        let rep = || {
            let start = Instant::now();
            let outputs: Vec<Tensor<2>> = (0..batch).map(|_| f()).collect();
            dev.sync().expect("device sync");
            let secs = start.elapsed().as_secs_f64();
            drop(outputs);
            secs * 1e3 / batch as f64
        };
        median((0..self.reps).map(|_| rep()).collect())
    }

    /// Random S (a×r) and G (a×b), the same for every call with these sizes. Timing only:
    /// S need not be orthonormal for the projection.
    fn inputs(&self, a: usize, r: usize, b: usize) -> (Tensor<2>, Tensor<2>) {
        let dev = &self.picked.device;
        dev.seed(3);
        let s = Tensor::<2>::random([a, r], Distribution::Normal(0.0, 1.0), dev);
        let g = Tensor::<2>::random([a, b], Distribution::Normal(0.0, 1.0), dev);
        (s, g)
    }
}

/// Section 4. Each repetition of a projection or an optimizer step times `batch`
/// back-to-back calls and one device sync ([`Timer`]); a tracking step is timed one call
/// per sync.
pub(crate) fn bench_kernels(
    picked: &Picked,
    full: bool,
    reps: usize,
    batch: usize,
) -> Vec<KernelRow> {
    if !kernels::wgsl_available(&picked.device) {
        eprintln!("  skipped: {} runs no WGSL kernels", picked.description);
        return Vec::new();
    }
    let timer = Timer {
        picked,
        reps,
        batch,
    };
    let mut shapes = vec![(512, 128, 1376), (768, 256, 2048)];
    if full {
        shapes.extend([(1024, 256, 2736), (2048, 512, 5461)]);
    }
    let floor = launch_floor(&timer);
    let floor_ms = floor.kernel_ms;
    let mut rows = vec![floor];
    // Projections first, all shapes, then the tracking step, whose set-up reads back.
    for &sizes in &shapes {
        rows.extend(projections(&timer, sizes));
    }
    for &sizes in &shapes {
        rows.extend(recovery(&timer, sizes));
    }
    for &sizes in &shapes {
        rows.push(tracking(&timer, sizes));
    }
    rows.extend(optimizer_steps(
        &timer,
        if full { "60m" } else { "20m" },
        floor_ms,
    ));
    rows
}

/// The launch floor: a projection whose arithmetic (64×4×64) costs next to nothing, so its
/// time is what one launch costs on this device and driver (a dispatch and the upload of
/// its small flag buffer, as in the optimizer's step), against Burn's matmul at the same
/// size. A projected SubTrack++ step launches five kernels (projection, Adam, column norms,
/// limiter, update; more where split-K or row chunks are chosen): the step rows count
/// them, and the floor times that count bounds how much of the optimizer step is dispatch
/// rather than arithmetic.
fn launch_floor(timer: &Timer) -> KernelRow {
    let (s, g) = timer.inputs(64, 4, 64);
    let kernel_ms = timer.timed(&|| route::project(&s, &g, RouteRequest::WGSL), timer.batch);
    let portable_ms = timer.timed(&|| basis::project(&s, &g), timer.batch);
    eprintln!(
        "  launch floor, project 64×64 r=4: WGSL {kernel_ms:.4} ms, Burn matmul {portable_ms:.4} ms"
    );
    KernelRow {
        what: "launch floor: projection SᵀG, 64×64, r = 4 (one dispatch, one small upload)".into(),
        kernel_ms,
        portable_ms,
        flops: f64::NAN,
    }
}

/// The projection at `(a, r, b)`: the default (one launch, the tile the autotuner picks for
/// the shape, whatever `--projection-splits` and `--projection-tile` set for the
/// optimizer's own projections), then each tile alone and with split-K (partial sums added
/// by project_reduce.wgsl) at several split counts, all against the same Burn matmul time.
fn projections(timer: &Timer, (a, r, b): (usize, usize, usize)) -> Vec<KernelRow> {
    let (s, g) = timer.inputs(a, r, b);
    let flops = 2.0 * (a * r * b) as f64;
    let hooks = (kernels::projection_splits(), kernels::projection_tile());
    kernels::set_projection_splits(1);
    kernels::set_projection_tile(TileChoice::Tuned);
    let kernel_ms = timer.timed(&|| route::project(&s, &g, RouteRequest::WGSL), timer.batch);
    kernels::set_projection_splits(hooks.0);
    kernels::set_projection_tile(hooks.1);
    let portable_ms = timer.timed(&|| basis::project(&s, &g), timer.batch);
    let chosen = kernels::tuned_tile("project", [a, r, b])
        .map_or("64×64, untuned".to_string(), |t| t.to_string());
    eprintln!(
        "  project {a}×{b} r={r}: WGSL ({chosen}) {kernel_ms:.3} ms, Burn matmul {portable_ms:.3} ms"
    );
    let mut rows = vec![KernelRow {
        what: format!("projection SᵀG, {a}×{b}, r = {r} (tuned: {chosen})"),
        kernel_ms,
        portable_ms,
        flops,
    }];
    let variants = [
        (1, ProjectionTile::Block64),
        (2, ProjectionTile::Block64),
        (4, ProjectionTile::Block64),
        (8, ProjectionTile::Block64),
        (1, ProjectionTile::Block128),
        (2, ProjectionTile::Block128),
        (4, ProjectionTile::Block128),
    ];
    for (splits, tile) in variants {
        let kernel_ms = timer.timed(
            &|| route::project_split(&s, &g, splits, tile).0,
            timer.batch,
        );
        let label = match splits {
            1 => format!("{tile} tiles"),
            _ => format!("{tile} tiles, split-K ×{splits}"),
        };
        eprintln!("  project {a}×{b} r={r} {label}: WGSL {kernel_ms:.3} ms");
        rows.push(KernelRow {
            what: format!("projection SᵀG {label}, {a}×{b}, r = {r}"),
            kernel_ms,
            portable_ms,
            flops,
        });
    }
    rows
}

/// Recovery scaling (§7) at `(a, r, b)`: column norms and limiter, tuned (the default),
/// each norm kernel pinned, and the tensor ops; G̃ and N random (timing only).
fn recovery(timer: &Timer, (a, r, b): (usize, usize, usize)) -> Vec<KernelRow> {
    let dev = &timer.picked.device;
    let (_, g) = timer.inputs(a, r, b);
    let (g_low, n) = (
        Tensor::<2>::random([r, b], Distribution::Normal(0.0, 1.0), dev),
        Tensor::<2>::random([r, b], Distribution::Normal(0.0, 1.0), dev),
    );
    let previous = Tensor::<1>::from_floats([1.0], dev);
    let c = SubTrackConfig::subtrack_plus_plus();
    let scales = |route: RouteRequest| {
        let inputs = RecoveryInputs {
            grad: &g,
            transposed: false,
            grad_sq: None,
            g_low: &g_low,
            normalized: &n,
            previous: Some(&previous),
        };
        route::recovery(
            inputs,
            c.recovery_scaling,
            c.scale,
            c.norm_growth_limit,
            None,
            route,
        )
        .scaled_phi
    };
    let hook = kernels::recovery_norms();
    let portable_ms = timer.timed(&|| scales(RouteRequest::PORTABLE), timer.batch);
    let mut rows = Vec::new();
    for norms in [
        NormsChoice::Tuned,
        ColumnNorms::PerColumn.into(),
        ColumnNorms::Tiled.into(),
    ] {
        kernels::set_recovery_norms(norms);
        let kernel_ms = timer.timed(&|| scales(RouteRequest::WGSL), timer.batch);
        let label = match norms {
            NormsChoice::Tuned => format!(
                "tuned: {}",
                kernels::tuned_norms([a, r, b])
                    .map_or("per-column norms, untuned".into(), |n| n.to_string())
            ),
            NormsChoice::Fixed(n) => n.to_string(),
        };
        eprintln!(
            "  recovery {a}×{b} r={r} ({label}): WGSL {kernel_ms:.3} ms, portable {portable_ms:.3} ms"
        );
        rows.push(KernelRow {
            what: format!("recovery scaling, {a}×{b}, r = {r} ({label})"),
            kernel_ms,
            portable_ms,
            flops: f64::NAN,
        });
    }
    kernels::set_recovery_norms(hook);
    rows
}

/// The tracking step at `(a, r, b)`: kernels (no read-back) against tensor ops + the host
/// r×r solve, from an orthonormal basis (the column space of S, by Cholesky-QR; cheap to
/// make). One call per sync: each takes milliseconds, and the portable step reads back.
fn tracking(timer: &Timer, (a, r, b): (usize, usize, usize)) -> KernelRow {
    let (s, g) = timer.inputs(a, r, b);
    let basis = basis::randomized_singular_basis(&s, r, 0);
    let kernel_ms = timer.timed(
        &|| {
            route::track(&basis, &g, 1e-3, None, 1e-5)
                .expect("tracking kernels run")
                .basis
        },
        1,
    );
    let portable_ms = timer.timed(
        &|| geodesic::geodesic_step(&basis, &g, 1e-3, None, 1e-5).basis,
        1,
    );
    eprintln!(
        "  geodesic step {a}×{b} r={r}: WGSL {kernel_ms:.3} ms, portable {portable_ms:.3} ms"
    );
    KernelRow {
        what: format!("geodesic tracking step, {a}×{b}, r = {r}"),
        kernel_ms,
        portable_ms,
        flops: f64::NAN,
    }
}

/// The kernels variants of the optimizer step: label, WGSL on, splits, tile.
type StepVariant = (&'static str, bool, usize, TileChoice);

/// The optimizer step alone (no subspace update in the window) on llama `size`: the kernels
/// as the command line set them, the kernels with each experimental projection, and the
/// portable path, their repetitions interleaved (alternating order) so that drift falls on
/// all alike. `floor_ms` prices the launches the default kernels make per step.
fn optimizer_steps(timer: &Timer, size: &str, floor_ms: f64) -> Vec<KernelRow> {
    let (reps, batch) = (timer.reps, timer.batch);
    let (splits, tile) = (kernels::projection_splits(), kernels::projection_tile());
    let variants = step_variants(splits, tile);
    let mut runs = step_runs(timer.picked, size, &variants);
    let steps = |k: usize, n: usize, runs: &mut [StepRun]| {
        let (_, _, splits, tile) = variants[k];
        kernels::set_projection_splits(splits);
        kernels::set_projection_tile(tile);
        let run = &mut runs[k];
        let mut model = run.model.take().expect("model");
        for _ in 0..n {
            model = run.optim.step(1e-3, model, run.grads.params());
        }
        sync(&model.layers[0].attention.wq.weight.val());
        run.model = Some(model);
    };
    for k in 0..variants.len() {
        steps(k, 2, &mut runs);
    }
    // WGSL dispatches per step of the default kernels (after the warm-up, so no tuning).
    let mut dispatched = 0;
    for rep in 0..reps {
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let before = kernels::wgsl_dispatches();
            let start = Instant::now();
            steps(k, batch, &mut runs);
            let ms = start.elapsed().as_secs_f64() * 1e3 / batch as f64;
            runs[k].times.push(ms);
            if k == 0 {
                dispatched += kernels::wgsl_dispatches() - before;
            }
        }
    }
    kernels::set_projection_splits(splits);
    kernels::set_projection_tile(tile);
    let per_step = dispatched as f64 / (reps * batch).max(1) as f64;
    let dispatch = format!(
        "{per_step:.0} WGSL launches; at the launch floor {:.2} ms",
        per_step * floor_ms
    );
    eprintln!("  SubTrack++ step, llama {size}, kernels: {dispatch}");
    let step_ms: Vec<f64> = runs.into_iter().map(|r| median(r.times)).collect();
    step_rows(&variants, &step_ms, size, &dispatch)
}

/// The variants of the optimizer step: the kernels as the command line pinned them
/// (`splits`, `tile`), each experimental projection, and the portable path, last.
fn step_variants(splits: usize, tile: TileChoice) -> [StepVariant; 5] {
    [
        ("kernels", true, splits, tile),
        (
            "kernels, 64×64 tiles",
            true,
            1,
            ProjectionTile::Block64.into(),
        ),
        (
            "kernels, 128×128 tiles",
            true,
            1,
            ProjectionTile::Block128.into(),
        ),
        (
            "kernels, split-K ×2 projections",
            true,
            2,
            ProjectionTile::Block64.into(),
        ),
        ("portable", false, 1, TileChoice::Tuned),
    ]
}

/// One row per kernel variant, each against the portable step (the last median).
fn step_rows(
    variants: &[StepVariant],
    step_ms: &[f64],
    size: &str,
    dispatch: &str,
) -> Vec<KernelRow> {
    let portable_ms = step_ms[variants.len() - 1];
    let kernel_variants = variants.iter().enumerate().filter(|(_, v)| v.1);
    kernel_variants
        .map(|(k, &(label, ..))| {
            eprintln!(
                "  SubTrack++ step, llama {size}, {label}: {:.2} ms, portable {portable_ms:.2} ms",
                step_ms[k]
            );
            let what = if k == 0 {
                format!("SubTrack++ optimizer step, all llama {size} weights ({dispatch})")
            } else {
                format!("SubTrack++ optimizer step, all llama {size} weights, {label}")
            };
            KernelRow {
                what,
                kernel_ms: step_ms[k],
                portable_ms,
                flops: f64::NAN,
            }
        })
        .collect()
}

/// One [`StepRun`] per variant, each past its first step. That step finds every projected
/// matrix's initial basis with the host eigensolver (56 of them at 60m). The kernel
/// variants share one configuration (their projections differ only by this thread's
/// tuning hooks), so they start from copies of one model and optimizer after that step:
/// the host solves run twice, not once per variant.
fn step_runs(picked: &Picked, size: &str, variants: &[StepVariant]) -> Vec<StepRun> {
    let model_config = LlamaConfig::preset(size, 64).expect("preset");
    let ad = picked.device.clone().autodiff();
    let build = |on: bool| {
        let config = TrainConfig::new()
            .with_size(size.into())
            .with_optimizer("subtrack++".into())
            .with_update_interval(1_000_000)
            .with_wgsl_kernels(on);
        ad.seed(4);
        let model = model_config.init(&ad).expect("model");
        let grads = Grads::of(&model);
        let (optim, _) = config.build_optimizer(&model_config).expect("optimizer");
        StepRun {
            model: Some(model),
            grads,
            optim,
            times: Vec::new(),
        }
    };
    let mut first = build(true);
    let model = first.model.take().expect("model");
    first.model = Some(first.optim.step(1e-3, model, first.grads.params()));
    let copy = |run: &StepRun| StepRun {
        model: run.model.clone(),
        grads: run.grads.clone(),
        optim: run.optim.clone(),
        times: Vec::new(),
    };
    let mut runs = Vec::with_capacity(variants.len());
    for &(_, on, ..) in &variants[1..] {
        runs.push(if on { copy(&first) } else { build(false) });
    }
    runs.insert(0, first);
    runs
}
