//! Benchmarks of subspace-update time, optimizer-step overhead, training-step time and
//! memory for AdamW, GaLore, SubTrack-Grad and SubTrack++, side by side on one device.
//!
//! `cargo run --release --example benchmark -- [--full] [--device SPEC] [--reps N] [--out DIR]`
//!
//! The default (reduced) sizes finish in a few minutes on a 2-core CPU; `--full` selects the
//! LLaMA shapes meant for GPUs. Every figure is a median over `--reps` timed repetitions
//! after a warm-up (which also lets wgpu compile and autotune its kernels). Results go to
//! stdout as markdown and to `DIR/benchmark.md` and `DIR/benchmark.json`.

use std::process::ExitCode;
use std::time::Instant;

use burn::tensor::Tensor;
use subtrack::testing::kernels;
use subtrack_llama::alloc::CountingAlloc;
use subtrack_llama::device::{Picked, pick};
use subtrack_llama::panics::exit_on_background_panic;

mod amortised;
mod args;
mod report;
mod training;
mod updates;
mod wgsl;

use amortised::{Grads, StepRow, bench_amortised};
use args::Args;
use clap::Parser;
use report::{Setup, render, save};
use training::{TrainRow, bench_training};
use updates::{UpdateRow, bench_updates};
use wgsl::{KernelRow, bench_kernels};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The median of `xs` (the mean of the middle two for an even count).
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

fn main() -> ExitCode {
    // A panic on Burn's or wgpu's threads would leave this one waiting forever.
    exit_on_background_panic();
    // Bad options print clap's message and exit with status 2.
    let args = Args::parse();
    let picked = match pick(&args.device) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    kernels::set_projection_splits(args.projection_splits);
    kernels::set_projection_tile(args.projection_tile);
    kernels::set_recovery_norms(args.recovery_norms);
    let mode = if args.full { "full" } else { "reduced" };
    let started = Instant::now();
    eprintln!(
        "device: {}; mode {mode}; {} reps",
        picked.description, args.reps
    );
    let shapes = Shapes::of(&args);
    let mut results = Results::default();
    let setup = Setup {
        args: &args,
        picked: &picked,
        mode,
        started,
        step_size: shapes.step_size,
        interval: shapes.interval,
        amortised_reps: shapes.amortised_reps,
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
    for section in args.sections() {
        let (section_start, solves_before) = (Instant::now(), solved());
        run_section(section, &picked, &args, &shapes, &mut results);
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

/// The sizes each section measures, reduced or full (`--full`).
struct Shapes {
    /// Section 1: (m, n, r) of the subspace updates, within `--update-max`.
    updates: Vec<(usize, usize, usize)>,
    /// Section 2: the llama size of the amortised step and its window T.
    step_size: &'static str,
    interval: usize,
    /// Section 2's repetitions: each a window of T steps per optimizer, 3 at most, 2 at
    /// full size (one in each order).
    amortised_reps: usize,
    /// Section 3: (llama size, batch, sequence length) of the training steps.
    train: Vec<(String, usize, usize)>,
}

impl Shapes {
    fn of(args: &Args) -> Self {
        let updates = if args.full {
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
        let updates = updates
            .into_iter()
            .filter(|&(a, _, _)| args.update_max.is_none_or(|max| a <= max))
            .collect();
        let mut train: Vec<(String, usize, usize)> = if args.full {
            vec![("20m".into(), 16, 256), ("60m".into(), 16, 256)]
        } else {
            vec![("tiny".into(), 8, 64), ("9m".into(), 8, 128)]
        };
        if let Some(sizes) = &args.train_sizes {
            let (batch, seq) = if args.full { (16, 256) } else { (8, 128) };
            train = sizes.iter().map(|s| (s.clone(), batch, seq)).collect();
        }
        Shapes {
            updates,
            step_size: if args.full { "60m" } else { "20m" },
            interval: 200,
            amortised_reps: if args.full { 2 } else { args.reps.min(3) },
            train,
        }
    }
}

/// Run section `section` (1–4) into `results`.
fn run_section(section: u32, picked: &Picked, args: &Args, shapes: &Shapes, results: &mut Results) {
    let (step_size, interval) = (shapes.step_size, shapes.interval);
    match section {
        1 => {
            eprintln!("1. subspace update");
            results.updates = bench_updates(&picked.device, &shapes.updates, args);
        }
        2 => {
            eprintln!(
                "2. amortised optimizer step (llama {step_size} layer stack, T = {interval})"
            );
            results.steps = bench_amortised(
                picked,
                step_size,
                interval,
                shapes.amortised_reps,
                args.wgsl_kernels,
                args.cpu_kernels,
                &args.optimizers(),
            );
        }
        3 => {
            eprintln!("3. training step");
            for (size, batch, seq) in &shapes.train {
                results.training.extend(bench_training(
                    picked,
                    (size.as_str(), *batch, *seq),
                    args.reps.max(4),
                    interval,
                    args.wgsl_kernels,
                    args.cpu_kernels,
                    &args.optimizers(),
                ));
            }
        }
        _ => {
            eprintln!("4. WGSL kernels against the portable path on the same device");
            results.kernel_rows = bench_kernels(picked, args.full, args.reps, args.batch);
        }
    }
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
    subtrack::testing::linalg::host_solves()
        .iter()
        .fold((0, 0.0), |(c, s), x| (c + x.calls, s + x.seconds))
}
