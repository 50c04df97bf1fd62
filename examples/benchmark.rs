//! Benchmarks of subspace-update time, optimizer-step overhead, training-step time and
//! memory for AdamW, GaLore, SubTrack-Grad and SubTrack++, side by side on one device.
//!
//! `cargo run --release --example benchmark -- [--full] [--device SPEC] [--reps N] [--out DIR]`
//!
//! The default (reduced) sizes finish in a few minutes on a 2-core CPU; `--full` selects the
//! LLaMA shapes meant for GPUs. Every figure is a median over `--reps` timed repetitions
//! after a warm-up (which also lets wgpu compile and autotune its kernels). Results go to
//! stdout as markdown and to `DIR/benchmark.md` and `DIR/benchmark.json`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Tensor};
use subtrack::basis::{
    EXACT_SVD_MAX_SIDE, POWER_ITERATIONS, exact_singular_basis, randomized_singular_basis,
    top_singular_basis,
};
use subtrack::geodesic::geodesic_step;
use subtrack::kernels::{
    ColumnNorms, NormsChoice, ProjectionTile, RecoveryInputs, Route, TileChoice, Tuned,
};
use subtrack::pretrain::alloc::CountingAlloc;
use subtrack::pretrain::device::{self, Picked, pick};
use subtrack::pretrain::report::human_bytes;
use subtrack::pretrain::{Corpus, Llama, LlamaConfig, OptimizerKind, TrainConfig};
use subtrack::{SubTrackConfig, SubTrackReport, kernels, state_bytes};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Block until the device has finished everything `t` depends on.
fn sync(t: &Tensor<2>) {
    let _ = t.clone().slice([0..1, 0..1]).into_scalar::<f32>();
}

/// Seconds of `f`, synchronised.
fn time<T>(f: impl FnOnce() -> T, done: impl Fn(&T)) -> (f64, T) {
    let start = Instant::now();
    let out = f();
    done(&out);
    (start.elapsed().as_secs_f64(), out)
}

struct Args {
    full: bool,
    device: String,
    reps: usize,
    out: PathBuf,
    svd_max: usize,
    sections: Vec<u32>,
    wgsl_kernels: bool,
    cpu_kernels: bool,
    batch: usize,
    optimizers: Vec<OptimizerKind>,
    train_sizes: Option<Vec<String>>,
    projection_splits: usize,
    projection_tile: TileChoice,
    recovery_norms: NormsChoice,
}

/// `--help`: the options, one line each.
const USAGE: &str = "\
Usage: cargo run --release --example benchmark -- [OPTIONS]

Sections: 1 one subspace update, 2 the amortised optimizer step, 3 the training step,
4 the WGSL kernels against the portable path (wgpu only).

  --full                  LLaMA shapes, for GPUs (default: reduced sizes for a CPU)
  --device SPEC           where to run                                    [auto]
                          ({DEVICES})
  --reps N                timed repetitions per figure, after a warm-up   [5]
  --out DIR               where benchmark.md and benchmark.json go        [target/bench]
  --sections LIST         which sections, in the order given              [1,2,3,4]
  --optimizers LIST       sections 2 and 3: adamw,galore,subtrack-grad,subtrack++ [all]
  --train-sizes LIST      section 3's llama sizes            [tiny,9m; 20m,60m with --full]
  --svd-max M             skip GaLore's SVD where the short side exceeds M  [2048]
  --batch N               section 4: N back-to-back calls per device sync   [1]
  --no-wgsl-kernels       sections 2 and 3 on Burn's tensor ops on wgpu too
  --no-cpu-kernels        sections 2 and 3 on Burn's tensor ops on the CPU (flex) too
Kernel variants (the autotuner's choice by default; section 4 also times the tiles and
split counts beside it):
  --projection-splits N   pin the optimizer's projections to split-K, N partial sums
                          (1: the autotuner weighs split-K per shape) [1]
  --projection-tile T     its projections' and weight updates' blocks: 64 (64x64), 128
                          (128x128) or tuned (the autotuner's pick per shape) [tuned]
  --recovery-norms N      its recovery column norms: per-column, tiled (64x64 tiles) or
                          tuned (the autotuner's pick per shape) [tuned]
  -h, --help              this text
";

/// The command line, or `None` for `--help`.
fn parse() -> Result<Option<Args>, String> {
    let mut args = Args {
        full: false,
        device: "auto".into(),
        reps: 5,
        out: PathBuf::from("target/bench"),
        svd_max: 2048,
        sections: vec![1, 2, 3, 4],
        wgsl_kernels: SubTrackConfig::new().wgsl_kernels,
        cpu_kernels: SubTrackConfig::new().cpu_kernels,
        batch: 1,
        optimizers: OptimizerKind::ALL.to_vec(),
        train_sizes: None,
        projection_splits: 1,
        projection_tile: TileChoice::Tuned,
        recovery_norms: NormsChoice::Tuned,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--full" => args.full = true,
            "--wgsl-kernels" => args.wgsl_kernels = true,
            "--no-wgsl-kernels" => args.wgsl_kernels = false,
            "--no-cpu-kernels" => args.cpu_kernels = false,
            "--device" => args.device = value()?,
            "--reps" => {
                args.reps = value()?
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("--reps takes a positive integer")?
            }
            "--batch" => {
                args.batch = value()?
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("--batch takes a positive integer")?
            }
            "--optimizers" => {
                args.optimizers = value()?
                    .split(',')
                    .map(|x| OptimizerKind::parse(x.trim()).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--train-sizes" => {
                args.train_sizes = Some(value()?.split(',').map(|x| x.trim().into()).collect())
            }
            "--projection-splits" => {
                args.projection_splits = value()?
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("--projection-splits takes a positive integer")?
            }
            "--projection-tile" => {
                args.projection_tile = match value()?.as_str() {
                    "64" => ProjectionTile::Block64.into(),
                    "128" => ProjectionTile::Block128.into(),
                    "tuned" => TileChoice::Tuned,
                    _ => return Err("--projection-tile takes 64, 128 or tuned".into()),
                }
            }
            "--recovery-norms" => {
                args.recovery_norms = match value()?.as_str() {
                    "per-column" => ColumnNorms::PerColumn.into(),
                    "tiled" => ColumnNorms::Tiled.into(),
                    "tuned" => NormsChoice::Tuned,
                    _ => return Err("--recovery-norms takes per-column, tiled or tuned".into()),
                }
            }
            "--out" => args.out = PathBuf::from(value()?),
            "--svd-max" => {
                args.svd_max = value()?
                    .parse()
                    .map_err(|_| "--svd-max takes an integer".to_string())?
            }
            "--sections" => {
                let mut sections: Vec<u32> = Vec::new();
                for x in value()?.split(',') {
                    match x.trim().parse() {
                        Ok(n @ 1..=4) if !sections.contains(&n) => sections.push(n),
                        Ok(1..=4) => {}
                        _ => return Err(format!("--sections: bad `{x}` (1, 2, 3 or 4)")),
                    }
                }
                args.sections = sections;
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    Ok(Some(args))
}

/// `x / base` as "1.23×", or "–" where the baseline was not run.
fn ratio(x: f64, base: Option<f64>) -> String {
    base.map_or("–".into(), |b| format!("{:.2}×", x / b))
}

/// JSON string escaping for the few free-text fields.
fn js(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn jn(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.6}")
    } else {
        "null".into()
    }
}

// ---------------------------------------------------------------- 1. subspace update

struct UpdateRow {
    m: usize,
    n: usize,
    r: usize,
    geodesic_ms: f64,
    svd_ms: Option<f64>,
    svd_reps: usize,
    randomized_ms: f64,
    randomized_reps: usize,
}

fn bench_updates(dev: &Device, shapes: &[(usize, usize, usize)], args: &Args) -> Vec<UpdateRow> {
    let mut rows = Vec::new();
    for &(m, n, r) in shapes {
        dev.seed(1);
        let g = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), dev);
        let g2 = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), dev);
        // An orthonormal starting basis (made once, outside the timings): the top-r left
        // singular vectors of another matrix, or past the exact solver's limit the column
        // space of that matrix times a Gaussian one (no power iterations: the step's cost
        // does not depend on which basis it starts from, and the full SVD would take minutes
        // on a slow host at 4096×11008).
        let basis = if m.min(n) > EXACT_SVD_MAX_SIDE {
            randomized_singular_basis(&g2, r, 0)
        } else {
            top_singular_basis(&g2, r)
        };
        // The host solves of both SVDs dominate at large sizes: one timed run each there.
        let large = m.min(n) >= 2048;
        let host_reps = if large { 1 } else { args.reps };
        let config = SubTrackConfig::subtrack_grad();
        let step = || {
            geodesic_step(
                &basis,
                &g,
                config.step_size,
                config.max_theta,
                config.orthonormality_tolerance,
            )
        };
        let _ = step(); // warm-up
        let geodesic: Vec<f64> = (0..args.reps)
            .map(|_| time(step, |s| sync(&s.basis)).0 * 1e3)
            .collect();
        let (svd_ms, svd_reps) = if m.min(n) <= args.svd_max {
            // Warm the Gram product's kernels, then time the whole refresh.
            sync(&g.clone().matmul(g.clone().transpose()));
            let t: Vec<f64> = (0..host_reps)
                .map(|_| time(|| exact_singular_basis(&g, r), sync).0 * 1e3)
                .collect();
            (Some(median(t)), host_reps)
        } else {
            (None, 0)
        };
        // The crate's randomized SVD (what `top_singular_basis` uses past 1024 rows); at large
        // sizes its warm-up takes one power iteration (which runs every product shape once).
        let randomized = || randomized_singular_basis(&g, r, POWER_ITERATIONS);
        if large {
            sync(&randomized_singular_basis(&g, r, 1));
        } else {
            sync(&randomized());
        }
        let randomized_ms = median(
            (0..host_reps)
                .map(|_| time(randomized, sync).0 * 1e3)
                .collect(),
        );
        let row = UpdateRow {
            m,
            n,
            r,
            geodesic_ms: median(geodesic),
            svd_ms,
            svd_reps,
            randomized_ms,
            randomized_reps: host_reps,
        };
        eprintln!(
            "  update {m}×{n} r={r}: geodesic {:.2} ms, SVD {}, randomized SVD {randomized_ms:.1} ms",
            row.geodesic_ms,
            svd_ms.map_or("skipped".into(), |s| format!("{s:.1} ms"))
        );
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------- 2. amortised step

/// One optimizer of section 4's step comparison: its model (taken out while it steps), the
/// fixed gradients, the optimizer and its timed repetitions (ms per step).
struct StepRun {
    model: Option<Llama>,
    grads: Grads,
    optim: ModuleOptimizer,
    times: Vec<f64>,
}

/// Random gradients with the shapes of a module's parameters, rebuilt into a fresh
/// `GradientsParams` for every step.
#[derive(Clone)]
struct Grads {
    one: Vec<(ParamId, Tensor<1>)>,
    two: Vec<(ParamId, Tensor<2>)>,
}

impl ModuleVisitor for Grads {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let v = p.val();
        let g = Tensor::<D>::random(
            v.shape(),
            Distribution::Normal(0.0, 1e-2),
            &v.device().inner(),
        );
        match D {
            1 => self.one.push((p.id, g.reshape([-1]))),
            2 => {
                let dims = v.dims();
                self.two
                    .push((p.id, g.reshape([dims[0] as i32, dims[1] as i32])))
            }
            _ => {}
        }
    }
}

impl Grads {
    /// Random gradients for every float parameter of `model`.
    fn of(model: &impl Module) -> Self {
        let mut grads = Self {
            one: Vec::new(),
            two: Vec::new(),
        };
        model.visit(&mut grads);
        grads
    }

    fn params(&self) -> GradientsParams {
        let mut out = GradientsParams::new();
        for (id, g) in &self.one {
            out.register(*id, g.clone());
        }
        for (id, g) in &self.two {
            out.register(*id, g.clone());
        }
        out
    }
}

struct StepRow {
    optimizer: OptimizerKind,
    per_step_ms: f64,
    updates: u64,
    state_bytes: usize,
    projected_bytes: usize,
}

/// Each optimizer is built once (model, state and the first step, which finds the initial
/// bases, outside the timings) and then timed over `reps` windows of `interval` steps, each
/// holding one subspace update. Windows are interleaved across optimizers, in alternating
/// order (forward on even reps, backward on odd), so that drift in the machine's speed or the
/// allocator's state over the run does not favour whichever optimizer runs first.
fn bench_amortised(
    picked: &Picked,
    size: &str,
    interval: usize,
    reps: usize,
    wgsl: bool,
    cpu: bool,
    kinds: &[OptimizerKind],
) -> Vec<StepRow> {
    let dev = picked.device.clone().autodiff();
    let model_config = LlamaConfig::preset(size, 64).expect("preset");
    let mut totals = vec![Vec::new(); kinds.len()];
    let mut updates = vec![0; kinds.len()];
    let mut bytes = vec![Default::default(); kinds.len()];
    let mut runs: Vec<_> = kinds
        .iter()
        .map(|kind| {
            let config = TrainConfig::new()
                .with_size(size.into())
                .with_optimizer(kind.name().into())
                .with_update_interval(interval)
                .with_wgsl_kernels(wgsl)
                .with_cpu_kernels(cpu);
            dev.seed(1);
            let model = model_config.init(&dev).expect("model");
            let grads = Grads::of(&model);
            let (mut optim, report) = config.build_optimizer(&model_config).expect("optimizer");
            // Step 1 builds the initial bases (an SVD each); excluded like any warm-up.
            let model = optim.step(1e-3, model, grads.params());
            sync(&model.layers[0].attention.wq.weight.val());
            (Some(model), optim, report, grads)
        })
        .collect();
    for rep in 0..reps {
        let mut order: Vec<usize> = (0..kinds.len()).collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let (slot, optim, report, grads) = &mut runs[k];
            let mut model = slot.take().expect("model");
            let before = report.as_ref().map_or(0, |r| r.subspace_updates());
            let start = Instant::now();
            for _ in 0..interval {
                model = optim.step(1e-3, model, grads.params());
            }
            sync(&model.layers[0].attention.wq.weight.val());
            totals[k].push(start.elapsed().as_secs_f64());
            updates[k] = report.as_ref().map_or(0, |r| r.subspace_updates()) - before;
            bytes[k] = state_bytes(optim).expect("state");
            *slot = Some(model);
        }
    }
    let mut rows = Vec::new();
    for (k, &kind) in kinds.iter().enumerate() {
        let total = median(totals[k].clone());
        let row = StepRow {
            optimizer: kind,
            per_step_ms: total / interval as f64 * 1e3,
            updates: updates[k],
            state_bytes: bytes[k].total,
            projected_bytes: bytes[k].projected,
        };
        eprintln!(
            "  amortised {}: {:.2} ms/step ({} updates)",
            kind.label(),
            row.per_step_ms,
            updates[k]
        );
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------- 3. training step

struct TrainRow {
    size: String,
    optimizer: OptimizerKind,
    step_ms: f64,
    update_step_ms: f64,
    amortised_ms: f64,
    tokens_per_s: f64,
    state_bytes: usize,
    peak_memory: Option<u64>,
}

/// Section 3 at one model size; `(size, batch, seq)` names the preset and the batch shape.
///
/// Two passes. The first runs each optimizer alone for its warm-up and takes its peak
/// memory there; the warm-up also compiles (and autotunes) its kernels and holds a subspace
/// update. The second builds them all again and times their steps in turn, one step of each
/// optimizer after another, in alternating order, so that the machine's drift falls on all
/// of them alike and the ratios to AdamW are side by side.
fn bench_training(
    picked: &Picked,
    (size, batch, seq): (&str, usize, usize),
    reps: usize,
    interval: usize,
    wgsl: bool,
    cpu: bool,
    kinds: &[OptimizerKind],
) -> Vec<TrainRow> {
    let dev = picked.device.clone().autodiff();
    let corpus = Corpus::synthetic(200_000, 20_000, 1);
    let model_config = LlamaConfig::preset(size, corpus.vocab)
        .expect("preset")
        .with_max_seq_len(seq);
    // Subspace updates every t = 3 steps (k = 3, 6, …), so that both passes hold one.
    let t = 3;
    let build = |kind: OptimizerKind| {
        let config = TrainConfig::new()
            .with_size(size.into())
            .with_optimizer(kind.name().into())
            .with_update_interval(t)
            .with_wgsl_kernels(wgsl)
            .with_cpu_kernels(cpu);
        dev.seed(5);
        let model = model_config.init(&dev).expect("model");
        let (optim, report) = config.build_optimizer(&model_config).expect("optimizer");
        (model, optim, report)
    };
    // One training step; returns the model, its seconds and whether it updated a subspace.
    let train_step = |model: Llama,
                      optim: &mut ModuleOptimizer,
                      report: &Option<SubTrackReport>,
                      step: usize| {
        let updates = |r: &Option<SubTrackReport>| r.as_ref().map_or(0, |r| r.subspace_updates());
        let before = updates(report);
        let start = Instant::now();
        let (x, y) = corpus.train_batch(5, step as u64, batch, seq, &dev);
        let loss = model.loss(x, y);
        let _ = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(1e-3, model, grads);
        sync(&model.layers[0].attention.wq.weight.val());
        (
            model,
            start.elapsed().as_secs_f64(),
            updates(report) > before,
        )
    };
    // One untimed AdamW step first: the CPU backend keeps per-shape scratch buffers after
    // their first use, which would otherwise land in the first optimizer's peak memory.
    {
        let (model, mut optim, report) = build(OptimizerKind::AdamW);
        let _ = train_step(model, &mut optim, &report, 0);
    }

    // Pass 1: each optimizer alone, k = 0 … 3 (the initial bases at k = 0, an update at 3).
    let mut peaks = Vec::new();
    for &kind in kinds {
        device::reset_peak();
        let (mut model, mut optim, report) = build(kind);
        let mut peak = device::memory_in_use(&picked.device, picked.is_wgpu);
        for step in 0..=t {
            model = train_step(model, &mut optim, &report, step).0;
            peak = peak.max(device::memory_in_use(&picked.device, picked.is_wgpu));
        }
        peaks.push(peak.max(device::peak_memory(picked.is_wgpu)));
    }

    // Pass 2: all side by side. k = 0 (the initial bases) is untimed; k = 1 … n are timed,
    // n = 2·reps ≥ 6, so that each median has several steps: about 2n/3 regular steps and
    // n/3 update steps (k = 3, 6, …).
    let mut slots: Vec<_> = kinds
        .iter()
        .map(|&kind| {
            let (model, mut optim, report) = build(kind);
            let model = train_step(model, &mut optim, &report, 0).0;
            (Some(model), optim, report, Vec::new(), Vec::new())
        })
        .collect();
    for step in 1..=2 * reps.max(3) {
        let mut order: Vec<usize> = (0..kinds.len()).collect();
        if step % 2 == 0 {
            order.reverse();
        }
        for k in order {
            let (slot, optim, report, regular, update_steps) = &mut slots[k];
            let (model, secs, updated) =
                train_step(slot.take().expect("model"), optim, report, step);
            if updated {
                update_steps.push(secs);
            } else {
                regular.push(secs);
            }
            *slot = Some(model);
        }
    }

    let mut rows = Vec::new();
    for (k, &kind) in kinds.iter().enumerate() {
        let (_, optim, _, regular, update_steps) = &slots[k];
        let step_s = median(regular.clone());
        // AdamW has no update: its amortised step is its median step.
        let update_s = if update_steps.is_empty() {
            step_s
        } else {
            median(update_steps.clone())
        };
        let amortised = (step_s * (interval - 1) as f64 + update_s) / interval as f64;
        let row = TrainRow {
            size: size.into(),
            optimizer: kind,
            step_ms: step_s * 1e3,
            update_step_ms: update_s * 1e3,
            amortised_ms: amortised * 1e3,
            tokens_per_s: (batch * seq) as f64 / amortised,
            state_bytes: state_bytes(optim).expect("state").total,
            peak_memory: peaks[k],
        };
        eprintln!(
            "  train {size} {}: {:.1} ms/step, update step {:.1} ms",
            kind.label(),
            row.step_ms,
            row.update_step_ms
        );
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------- 4. WGSL kernels

struct KernelRow {
    what: String,
    kernel_ms: f64,
    portable_ms: f64,
    flops: f64,
}

/// Section 4. Each repetition of a projection or an optimizer step times `batch`
/// back-to-back calls (their outputs kept alive, so none is skipped) and one device sync,
/// divided by `batch`; a tracking step is timed one call per sync.
fn bench_kernels(picked: &Picked, full: bool, reps: usize, batch: usize) -> Vec<KernelRow> {
    let dev = &picked.device;
    if !kernels::wgsl_available(dev) {
        eprintln!("  skipped: {} runs no WGSL kernels", picked.description);
        return Vec::new();
    }
    let mut rows = Vec::new();
    let mut shapes = vec![(512, 128, 1376), (768, 256, 2048)];
    if full {
        shapes.extend([(1024, 256, 2736), (2048, 512, 5461)]);
    }
    let timed = |f: &dyn Fn() -> Tensor<2>, batch: usize| {
        sync(&f()); // warm-up: compiles (and, for Burn's matmul, autotunes)
        let rep = || {
            let start = Instant::now();
            let outputs: Vec<Tensor<2>> = (0..batch).map(|_| f()).collect();
            dev.sync().expect("device sync");
            let secs = start.elapsed().as_secs_f64();
            drop(outputs);
            secs * 1e3 / batch as f64
        };
        median((0..reps).map(|_| rep()).collect())
    };
    let inputs = |a: usize, r: usize, b: usize| {
        dev.seed(3);
        // Timing only: S need not be orthonormal for the projection.
        let s = Tensor::<2>::random([a, r], Distribution::Normal(0.0, 1.0), dev);
        let g = Tensor::<2>::random([a, b], Distribution::Normal(0.0, 1.0), dev);
        (s, g)
    };
    // Projections first, all shapes, then the tracking step, whose set-up reads back.
    for &(a, r, b) in &shapes {
        let (s, g) = inputs(a, r, b);
        // The default: one launch, the tile the autotuner picks for the shape (it tunes in
        // the warm-up call), whatever `--projection-splits` and `--projection-tile` set for
        // the optimizer's own projections.
        let hooks = (kernels::projection_splits(), kernels::projection_tile());
        kernels::set_projection_splits(1);
        kernels::set_projection_tile(TileChoice::Tuned);
        let kernel_ms = timed(&|| kernels::project(&s, &g, Route::WGSL), batch);
        kernels::set_projection_splits(hooks.0);
        kernels::set_projection_tile(hooks.1);
        let portable_ms = timed(&|| subtrack::basis::project(&s, &g), batch);
        let chosen = kernels::tuned_tile("project", [a, r, b])
            .map_or("64×64, untuned".to_string(), |t| t.to_string());
        eprintln!(
            "  project {a}×{b} r={r}: WGSL ({chosen}) {kernel_ms:.3} ms, Burn matmul {portable_ms:.3} ms"
        );
        rows.push(KernelRow {
            what: format!("projection SᵀG, {a}×{b}, r = {r} (tuned: {chosen})"),
            kernel_ms,
            portable_ms,
            flops: 2.0 * (a * r * b) as f64,
        });
        // Fixed variants against the same Burn matmul time: each tile, alone and with
        // split-K (partial sums added by project_reduce.wgsl) at several split counts.
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
            let kernel_ms = timed(&|| kernels::project_split(&s, &g, splits, tile).0, batch);
            let label = match splits {
                1 => format!("{tile} tiles"),
                _ => format!("{tile} tiles, split-K ×{splits}"),
            };
            eprintln!("  project {a}×{b} r={r} {label}: WGSL {kernel_ms:.3} ms");
            rows.push(KernelRow {
                what: format!("projection SᵀG {label}, {a}×{b}, r = {r}"),
                kernel_ms,
                portable_ms,
                flops: 2.0 * (a * r * b) as f64,
            });
        }
    }
    // Recovery scaling (§7): column norms and limiter, tuned (the default), each norm
    // kernel pinned, and the tensor ops; G̃ and N random (timing only).
    for &(a, r, b) in &shapes {
        let (_, g) = inputs(a, r, b);
        let (g_low, n) = (
            Tensor::<2>::random([r, b], Distribution::Normal(0.0, 1.0), dev),
            Tensor::<2>::random([r, b], Distribution::Normal(0.0, 1.0), dev),
        );
        let previous = Tensor::<1>::from_floats([1.0], dev);
        let scales = |route: Route| {
            let inputs = RecoveryInputs {
                grad: &g,
                transposed: false,
                grad_sq: None,
                g_low: &g_low,
                normalized: &n,
                previous: Some(&previous),
            };
            let c = SubTrackConfig::subtrack_plus_plus();
            kernels::recovery(
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
        let portable_ms = timed(&|| scales(Route::PORTABLE), batch);
        for norms in [
            NormsChoice::Tuned,
            ColumnNorms::PerColumn.into(),
            ColumnNorms::Tiled.into(),
        ] {
            kernels::set_recovery_norms(norms);
            let kernel_ms = timed(&|| scales(Route::WGSL), batch);
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
    }
    for &(a, r, b) in &shapes {
        let (s, g) = inputs(a, r, b);
        // The tracking step: kernels (no read-back) against tensor ops + the host r×r solve,
        // from an orthonormal basis (the column space of S, by Cholesky-QR; cheap to make).
        let basis = subtrack::basis::randomized_singular_basis(&s, r, 0);
        // One call per sync: each takes milliseconds, and the portable step reads back.
        let kernel_ms = timed(
            &|| {
                kernels::track(&basis, &g, 1e-3, None, 1e-5)
                    .expect("tracking kernels run")
                    .basis
            },
            1,
        );
        let portable_ms = timed(
            &|| subtrack::geodesic::geodesic_step(&basis, &g, 1e-3, None, 1e-5).basis,
            1,
        );
        eprintln!(
            "  geodesic step {a}×{b} r={r}: WGSL {kernel_ms:.3} ms, portable {portable_ms:.3} ms"
        );
        rows.push(KernelRow {
            what: format!("geodesic tracking step, {a}×{b}, r = {r}"),
            kernel_ms,
            portable_ms,
            flops: f64::NAN,
        });
    }
    // The optimizer step alone (no subspace update in the window): the kernels as the
    // command line set them, the kernels with each experimental projection, and the
    // portable path, their repetitions interleaved (alternating order) so that drift falls
    // on all alike.
    let size = if full { "60m" } else { "20m" };
    let model_config = LlamaConfig::preset(size, 64).expect("preset");
    let ad = dev.clone().autodiff();
    let (splits, tile) = (kernels::projection_splits(), kernels::projection_tile());
    let variants = [
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
    ];
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
    // The first step finds every projected matrix's initial basis with the host
    // eigensolver (56 of them at 60m). The kernel variants share one configuration (their
    // projections differ only by this thread's tuning hooks), so they start from copies of
    // one model and optimizer after that step: the host solves run twice, not four times.
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
    for rep in 0..reps {
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let start = Instant::now();
            steps(k, batch, &mut runs);
            let ms = start.elapsed().as_secs_f64() * 1e3 / batch as f64;
            runs[k].times.push(ms);
        }
    }
    kernels::set_projection_splits(splits);
    kernels::set_projection_tile(tile);
    let step_ms: Vec<f64> = runs.into_iter().map(|r| median(r.times)).collect();
    let portable_ms = step_ms[variants.len() - 1];
    for (k, &(label, ..)) in variants.iter().enumerate().filter(|(_, v)| v.1) {
        eprintln!(
            "  SubTrack++ step, llama {size}, {label}: {:.2} ms, portable {portable_ms:.2} ms",
            step_ms[k]
        );
        let what = if k == 0 {
            format!("SubTrack++ optimizer step, all llama {size} weights")
        } else {
            format!("SubTrack++ optimizer step, all llama {size} weights, {label}")
        };
        rows.push(KernelRow {
            what,
            kernel_ms: step_ms[k],
            portable_ms,
            flops: f64::NAN,
        });
    }
    rows
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{}", USAGE.replace("{DEVICES}", device::DEVICE_HELP));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let picked = match pick(&args.device) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dev = picked.device.clone();
    kernels::set_projection_splits(args.projection_splits);
    kernels::set_projection_tile(args.projection_tile);
    kernels::set_recovery_norms(args.recovery_norms);
    let mode = if args.full { "full" } else { "reduced" };
    let started = Instant::now();
    eprintln!(
        "device: {}; mode {mode}; {} reps",
        picked.description, args.reps
    );

    let update_shapes: Vec<(usize, usize, usize)> = if args.full {
        vec![
            (512, 1376, 128),
            (768, 2048, 256),
            (1024, 2736, 256),
            (2048, 5461, 512),
            (4096, 11008, 1024),
        ]
    } else {
        vec![(512, 1376, 128), (768, 2048, 256)]
    };
    let (step_size, interval) = if args.full {
        ("60m", 200)
    } else {
        ("20m", 200)
    };
    let mut train_sizes: Vec<(&str, usize, usize)> = if args.full {
        vec![("20m", 16, 256), ("60m", 16, 256)]
    } else {
        vec![("tiny", 8, 64), ("9m", 8, 128)]
    };
    if let Some(sizes) = &args.train_sizes {
        let (batch, seq) = if args.full { (16, 256) } else { (8, 128) };
        train_sizes = sizes.iter().map(|s| (s.as_str(), batch, seq)).collect();
    }

    // Each repetition is a window of T steps per optimizer: 3 at most, 2 at full size (one
    // in each order).
    let amortised_reps = if args.full { 2 } else { args.reps.min(3) };
    let mut results = Results::default();
    let setup = Setup {
        args: &args,
        picked: &picked,
        mode,
        started,
        step_size,
        interval,
        amortised_reps,
    };
    // The files are rewritten after each section, so a run stopped part-way keeps what it
    // measured.
    let checkpoint = |results: &Results| {
        let (md, json) = render(&setup, results);
        match save(&args.out, &md, &json) {
            Ok(()) => Some(md),
            Err(e) => {
                eprintln!("error: writing {}: {e}", args.out.display());
                None
            }
        }
    };
    let mut md = None;
    // In the order asked for: a time-boxed run gets the first ones (the tables keep their
    // numbers).
    for &section in &args.sections {
        let (section_start, solves_before) = (Instant::now(), solved());
        match section {
            1 => {
                eprintln!("1. subspace update");
                results.updates = bench_updates(&dev, &update_shapes, &args);
            }
            2 => {
                eprintln!(
                    "2. amortised optimizer step (llama {step_size} layer stack, T = {interval})"
                );
                results.steps = bench_amortised(
                    &picked,
                    step_size,
                    interval,
                    amortised_reps,
                    args.wgsl_kernels,
                    args.cpu_kernels,
                    &args.optimizers,
                );
            }
            3 => {
                eprintln!("3. training step");
                for &shape in &train_sizes {
                    results.training.extend(bench_training(
                        &picked,
                        shape,
                        args.reps.max(4),
                        interval,
                        args.wgsl_kernels,
                        args.cpu_kernels,
                        &args.optimizers,
                    ));
                }
            }
            _ => {
                eprintln!("4. WGSL kernels against the portable path on the same device");
                results.kernel_rows = bench_kernels(&picked, args.full, args.reps, args.batch);
            }
        }
        let solves = solved();
        let time = SectionTime {
            section,
            seconds: section_start.elapsed().as_secs_f64(),
            solves: solves.0 - solves_before.0,
            solve_seconds: solves.1 - solves_before.1,
        };
        eprintln!(
            "  section {section}: {:.1} s, of which {:.1} s in {} host eigen-solves",
            time.seconds, time.solve_seconds, time.solves
        );
        results.sections.push(time);
        let Some(text) = checkpoint(&results) else {
            return ExitCode::FAILURE;
        };
        md = Some(text);
    }
    // No section ran: the (empty) report is written once here.
    let Some(md) = md.or_else(|| checkpoint(&results)) else {
        return ExitCode::FAILURE;
    };
    print!("{md}");
    eprintln!(
        "wrote {0}/benchmark.md and {0}/benchmark.json",
        args.out.display()
    );
    ExitCode::SUCCESS
}

/// Everything measured so far.
#[derive(Default)]
struct Results {
    updates: Vec<UpdateRow>,
    steps: Vec<StepRow>,
    training: Vec<TrainRow>,
    kernel_rows: Vec<KernelRow>,
    sections: Vec<SectionTime>,
}

/// Where a section's wall time went: all of it, and the host eigensolver's share (the
/// exact SVDs' and the portable tracking steps' solves, `linalg::host_solves`).
struct SectionTime {
    section: u32,
    seconds: f64,
    solves: u64,
    solve_seconds: f64,
}

/// (calls, seconds) of the host eigensolver so far, all sides together.
fn solved() -> (u64, f64) {
    subtrack::linalg::host_solves()
        .iter()
        .fold((0, 0.0), |(c, s), x| (c + x.calls, s + x.seconds))
}

/// What the report's headings name: the run's fixed settings.
struct Setup<'a> {
    args: &'a Args,
    picked: &'a Picked,
    mode: &'a str,
    started: Instant,
    step_size: &'a str,
    interval: usize,
    amortised_reps: usize,
}

/// The markdown tables and the JSON document of `results`.
fn render(setup: &Setup, results: &Results) -> (String, String) {
    let Setup {
        args,
        picked,
        mode,
        started,
        step_size,
        interval,
        amortised_reps,
    } = *setup;
    let Results {
        updates,
        steps,
        training,
        kernel_rows,
        sections,
    } = results;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Device: {} · backend {} · mode {mode} · medians of {} timed reps after warm-up · total {:.0} s\n",
        picked.description,
        match (picked.is_wgpu, args.wgsl_kernels, args.cpu_kernels) {
            (true, true, _) => "wgpu (WGSL), SubTrack's WGSL kernels on in sections 2 and 3",
            (true, false, _) => "wgpu (WGSL), SubTrack's WGSL kernels off (portable path)",
            (false, _, true) => "flex (CPU), SubTrack's fused CPU loops on in sections 2 and 3",
            (false, _, false) => "flex (CPU), SubTrack's fused CPU loops off (portable path)",
        },
        args.reps,
        started.elapsed().as_secs_f64()
    );
    if !sections.is_empty() {
        let times: Vec<String> = sections
            .iter()
            .map(|t| {
                format!(
                    "{} in {:.0} s ({:.1} s in {} host eigen-solves)",
                    t.section, t.seconds, t.solve_seconds, t.solves
                )
            })
            .collect();
        let _ = writeln!(md, "Sections: {}.\n", times.join("; "));
    }
    if let NormsChoice::Fixed(norms) = args.recovery_norms {
        let _ = writeln!(
            md,
            "Recovery column norms of the optimizer steps: {norms}, pinned.\n"
        );
    }
    if args.projection_splits > 1 {
        let _ = writeln!(
            md,
            "Projections of the optimizer steps: split-K pinned to {} partial sums.\n",
            args.projection_splits
        );
    }
    if let TileChoice::Fixed(tile) = args.projection_tile {
        let _ = writeln!(
            md,
            "Projections and weight updates of the optimizer steps: {tile} tiles (not tuned).\n"
        );
    }
    if !updates.is_empty() {
        let _ = writeln!(md, "### 1. One subspace update\n");
        let _ = writeln!(
            md,
            "| shape (m×n) | r | SubTrack geodesic step (ms) | GaLore SVD refresh, exact (ms) | SVD / geodesic | randomized SVD, q = {POWER_ITERATIONS} (ms) | randomized / geodesic |\n|---|---|---|---|---|---|---|"
        );
        for u in updates {
            let _ = writeln!(
                md,
                "| {}×{} | {} | {:.2} | {} | {} | {:.1}{} | {:.1}× |",
                u.m,
                u.n,
                u.r,
                u.geodesic_ms,
                u.svd_ms.map_or("skipped (--svd-max)".into(), |s| {
                    if u.svd_reps == 1 {
                        format!("{s:.1} (1 run)")
                    } else {
                        format!("{s:.1}")
                    }
                }),
                u.svd_ms
                    .map_or("–".into(), |s| format!("{:.1}×", s / u.geodesic_ms)),
                u.randomized_ms,
                if u.randomized_reps == 1 {
                    " (1 run)"
                } else {
                    ""
                },
                u.randomized_ms / u.geodesic_ms
            );
        }
    }
    if !steps.is_empty() {
        let _ = writeln!(
            md,
            "\n### 2. Amortised optimizer step: llama {step_size} weights, {interval} steps including one subspace update (median of {amortised_reps})\n"
        );
        let _ = writeln!(
            md,
            "| optimizer | ms/step | vs AdamW | vs GaLore | subspace updates in window | optimizer state | projected part |\n|---|---|---|---|---|---|---|"
        );
        let base = |kind| {
            steps
                .iter()
                .find(|s| s.optimizer == kind)
                .map(|s| s.per_step_ms)
        };
        let (adamw_step, galore_step) = (base(OptimizerKind::AdamW), base(OptimizerKind::GaLore));
        for s in steps {
            let _ = writeln!(
                md,
                "| {} | {:.2} | {} | {} | {} | {} | {} |",
                s.optimizer.label(),
                s.per_step_ms,
                ratio(s.per_step_ms, adamw_step),
                ratio(s.per_step_ms, galore_step),
                s.updates,
                human_bytes(s.state_bytes as u64),
                human_bytes(s.projected_bytes as u64)
            );
        }
    }
    let mem_kind = device::memory_kind(picked.is_wgpu);
    if !training.is_empty() {
        let _ = writeln!(
            md,
            "\n### 3. Training step (forward, backward, optimizer), amortised over T = {interval}\n\n\
             Steps of the optimizers interleaved; peak memory from each one's warm-up alone.\n"
        );
        let _ = writeln!(
            md,
            "| size | optimizer | median step (ms) | update step (ms) | amortised (ms) | vs AdamW | tokens/s | optimizer state | peak memory ({mem_kind}) |\n|---|---|---|---|---|---|---|---|---|"
        );
        for chunk in training.chunk_by(|x, y| x.size == y.size) {
            let base = chunk
                .iter()
                .find(|t| t.optimizer == OptimizerKind::AdamW)
                .map(|t| t.amortised_ms);
            for t in chunk {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {} | {} |",
                    t.size,
                    t.optimizer.label(),
                    t.step_ms,
                    t.update_step_ms,
                    t.amortised_ms,
                    ratio(t.amortised_ms, base),
                    t.tokens_per_s,
                    human_bytes(t.state_bytes as u64),
                    t.peak_memory.map_or("n/a".into(), human_bytes)
                );
            }
        }
    }
    if !kernel_rows.is_empty() {
        let _ = writeln!(
            md,
            "\n### 4. WGSL kernels against the portable path (Burn tensor ops) on the same device ({} back-to-back calls per rep, one sync)\n",
            args.batch
        );
        let _ = writeln!(
            md,
            "| what | WGSL (ms) | portable (ms) | WGSL / portable time | WGSL GFLOP/s | portable GFLOP/s |\n|---|---|---|---|---|---|"
        );
        for k in kernel_rows {
            let gflops = |ms: f64| {
                if k.flops.is_nan() {
                    "–".to_string()
                } else {
                    format!("{:.1}", k.flops / ms / 1e6)
                }
            };
            let _ = writeln!(
                md,
                "| {} | {:.3} | {:.3} | {:.2}× | {} | {} |",
                k.what,
                k.kernel_ms,
                k.portable_ms,
                k.kernel_ms / k.portable_ms,
                gflops(k.kernel_ms),
                gflops(k.portable_ms)
            );
        }
    }
    let tuned = kernels::tuned_tiles();
    if !tuned.is_empty() {
        let _ = writeln!(
            md,
            "\nWhat the autotuner chose in this run (products of at least {} multiply-adds; smaller ones run 64×64 with per-column norms):\n",
            kernels::TUNED_MIN_MACS
        );
        for (key, tile) in &tuned {
            let _ = writeln!(md, "- {key}: {tile}");
        }
    }

    let mut json = String::from("{\n");
    let _ = writeln!(json, "  \"device\": {},", js(&picked.description));
    let _ = writeln!(
        json,
        "  \"backend\": {},",
        js(if picked.is_wgpu { "wgpu" } else { "flex" })
    );
    let _ = writeln!(
        json,
        "  \"mode\": {},\n  \"reps\": {},",
        js(mode),
        args.reps
    );
    let items: Vec<String> = sections
        .iter()
        .map(|t| {
            format!(
                "    {{\"section\": {}, \"seconds\": {}, \"host_solves\": {}, \"host_solve_seconds\": {}}}",
                t.section,
                jn(t.seconds),
                t.solves,
                jn(t.solve_seconds)
            )
        })
        .collect();
    let _ = writeln!(json, "  \"sections\": [\n{}\n  ],", items.join(",\n"));
    let items: Vec<String> = updates
        .iter()
        .map(|u| {
            format!(
                "    {{\"m\": {}, \"n\": {}, \"r\": {}, \"geodesic_ms\": {}, \"svd_ms\": {}, \"svd_reps\": {}, \"randomized_svd_ms\": {}, \"randomized_svd_reps\": {}}}",
                u.m,
                u.n,
                u.r,
                jn(u.geodesic_ms),
                u.svd_ms.map_or("null".into(), jn),
                u.svd_reps,
                jn(u.randomized_ms),
                u.randomized_reps
            )
        })
        .collect();
    let _ = writeln!(
        json,
        "  \"subspace_update\": [\n{}\n  ],",
        items.join(",\n")
    );
    let items: Vec<String> = steps
        .iter()
        .map(|s| {
            format!(
                "    {{\"optimizer\": {}, \"size\": {}, \"interval\": {interval}, \"ms_per_step\": {}, \"updates\": {}, \"state_bytes\": {}, \"projected_state_bytes\": {}}}",
                js(s.optimizer.name()),
                js(step_size),
                jn(s.per_step_ms),
                s.updates,
                s.state_bytes,
                s.projected_bytes
            )
        })
        .collect();
    let _ = writeln!(json, "  \"amortised_step\": [\n{}\n  ],", items.join(",\n"));
    let items: Vec<String> = training
        .iter()
        .map(|t| {
            format!(
                "    {{\"size\": {}, \"optimizer\": {}, \"step_ms\": {}, \"update_step_ms\": {}, \"amortised_ms\": {}, \"tokens_per_s\": {}, \"state_bytes\": {}, \"peak_memory_bytes\": {}}}",
                js(&t.size),
                js(t.optimizer.name()),
                jn(t.step_ms),
                jn(t.update_step_ms),
                jn(t.amortised_ms),
                jn(t.tokens_per_s),
                t.state_bytes,
                t.peak_memory.map_or("null".into(), |m| m.to_string())
            )
        })
        .collect();
    let _ = writeln!(json, "  \"training_step\": [\n{}\n  ],", items.join(",\n"));
    let items: Vec<String> = kernel_rows
        .iter()
        .map(|k| {
            format!(
                "    {{\"what\": {}, \"wgsl_ms\": {}, \"portable_ms\": {}, \"flops\": {}}}",
                js(&k.what),
                jn(k.kernel_ms),
                jn(k.portable_ms),
                jn(k.flops)
            )
        })
        .collect();
    let _ = writeln!(json, "  \"wgsl_kernels\": [\n{}\n  ],", items.join(",\n"));
    let items: Vec<String> = tuned
        .iter()
        .map(|(k, tile)| {
            format!(
                "    {{\"kernel\": {}, \"a\": {}, \"r\": {}, \"b\": {}, \"transposed\": {}, \"recovery\": {}, {}}}",
                js(&k.kernel),
                k.a,
                k.r,
                k.b,
                k.transposed,
                k.recovery,
                match tile {
                    Tuned::Tile(t) => format!("\"tile\": {}, \"splits\": {}", t.tile.side(), t.splits),
                    Tuned::Norms(n) => format!(
                        "\"norms\": {}",
                        js(match n {
                            ColumnNorms::PerColumn => "per-column",
                            ColumnNorms::Tiled => "tiled",
                        })
                    ),
                }
            )
        })
        .collect();
    let _ = writeln!(json, "  \"tuned_tiles\": [\n{}\n  ]\n}}", items.join(",\n"));
    (md, json)
}

/// Write `benchmark.md` and `benchmark.json` into `--out`.
fn save(out: &std::path::Path, md: &str, json: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("benchmark.md"), md)?;
    std::fs::write(out.join("benchmark.json"), json)
}
