//! The markdown tables and the JSON document of a run, and writing them.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{Value, json};
use subtrack::checkpoint::write_atomic;
use subtrack::testing::basis::POWER_ITERATIONS;
use subtrack::testing::kernels;
use subtrack::testing::kernels::{ColumnNorms, NormsChoice, TileChoice, TileKey, Tuned};
use subtrack_llama::OptimizerKind;
use subtrack_llama::device::{self, Picked};
use subtrack_llama::report::human_bytes;

use crate::amortised::StepRow;
use crate::training::TrainRow;
use crate::updates::UpdateRow;
use crate::wgsl::KernelRow;
use crate::{Args, Results};

/// `x / base` as "1.23×", or "–" where the baseline was not run.
pub(crate) fn ratio(x: f64, base: Option<f64>) -> String {
    base.map_or("–".into(), |b| format!("{:.2}×", x / b))
}

/// What the report's headings name: the run's fixed settings.
pub(crate) struct Setup<'a> {
    pub(crate) args: &'a Args,
    pub(crate) picked: &'a Picked,
    pub(crate) mode: &'a str,
    pub(crate) started: Instant,
    pub(crate) step_size: &'a str,
    pub(crate) interval: usize,
    pub(crate) amortised_reps: usize,
}

/// The markdown tables and the JSON document of `results`.
pub(crate) fn render(setup: &Setup, results: &Results) -> (String, String) {
    let mut md = String::new();
    header(&mut md, setup, results);
    updates_table(&mut md, &results.updates);
    steps_table(&mut md, setup, &results.steps);
    training_table(&mut md, setup, &results.training);
    kernels_table(&mut md, setup, &results.kernel_rows);
    let tuned = kernels::tuned_tiles();
    tuned_list(&mut md, &tuned);
    (md, json_document(setup, results, &tuned))
}

/// The device, the mode, the sections' times and the pins of the run.
fn header(md: &mut String, setup: &Setup, results: &Results) {
    let Setup {
        args,
        picked,
        mode,
        started,
        ..
    } = *setup;
    let sections = &results.sections;
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
    if args.projection_tile == TileChoice::Matmul {
        let _ = writeln!(
            md,
            "Projections and weight updates of the optimizer steps: Burn's matmul (not tuned).\n"
        );
    }
}

/// Section 1: one subspace update.
fn updates_table(md: &mut String, updates: &[UpdateRow]) {
    if updates.is_empty() {
        return;
    }
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

/// Section 2: the amortised optimizer step.
fn steps_table(md: &mut String, setup: &Setup, steps: &[StepRow]) {
    let (step_size, interval, amortised_reps) =
        (setup.step_size, setup.interval, setup.amortised_reps);
    if steps.is_empty() {
        return;
    }
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

/// Section 3: the training step.
fn training_table(md: &mut String, setup: &Setup, training: &[TrainRow]) {
    let interval = setup.interval;
    let mem_kind = device::memory_kind(setup.picked.is_wgpu);
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
}

/// Section 4: the WGSL kernels against the portable path.
fn kernels_table(md: &mut String, setup: &Setup, kernel_rows: &[KernelRow]) {
    let args = setup.args;
    if kernel_rows.is_empty() {
        return;
    }
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

/// What the autotuner chose in this run.
fn tuned_list(md: &mut String, tuned: &[(TileKey, Tuned)]) {
    if !tuned.is_empty() {
        let _ = writeln!(
            md,
            "\nWhat the autotuner chose in this run (products of at least {} multiply-adds; smaller ones run 64×64 with per-column norms):\n",
            kernels::TUNED_MIN_MACS
        );
        for (key, tile) in tuned {
            let _ = writeln!(md, "- {key}: {tile}");
        }
    }
}

/// The JSON document: every section's rows and the tuner's choices. Non-finite figures (a
/// section not run) become null.
fn json_document(setup: &Setup, results: &Results, tuned: &[(TileKey, Tuned)]) -> String {
    let Setup {
        args,
        picked,
        mode,
        step_size,
        interval,
        ..
    } = *setup;
    let Results {
        updates,
        steps,
        training,
        kernel_rows,
        sections,
    } = results;
    let sections: Vec<Value> = sections
        .iter()
        .map(|t| {
            json!({
                "section": t.section,
                "seconds": t.seconds,
                "host_solves": t.solves,
                "host_solve_seconds": t.solve_seconds,
            })
        })
        .collect();
    let updates: Vec<Value> = updates
        .iter()
        .map(|u| {
            json!({
                "m": u.m,
                "n": u.n,
                "r": u.r,
                "geodesic_ms": u.geodesic_ms,
                "svd_ms": u.svd_ms,
                "svd_reps": u.svd_reps,
                "randomized_svd_ms": u.randomized_ms,
                "randomized_svd_reps": u.randomized_reps,
            })
        })
        .collect();
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| {
            json!({
                "optimizer": s.optimizer.name(),
                "size": step_size,
                "interval": interval,
                "ms_per_step": s.per_step_ms,
                "updates": s.updates,
                "state_bytes": s.state_bytes,
                "projected_state_bytes": s.projected_bytes,
            })
        })
        .collect();
    let (training, kernels) = (training_json(training), kernels_json(kernel_rows));
    let tuned = tuned_json(tuned);
    let json = json!({
        "device": picked.description,
        "backend": if picked.is_wgpu { "wgpu" } else { "flex" },
        "mode": mode,
        "reps": args.reps,
        "sections": sections,
        "subspace_update": updates,
        "amortised_step": steps,
        "training_step": training,
        "wgsl_kernels": kernels,
        "tuned_tiles": tuned,
    });
    serde_json::to_string_pretty(&json).expect("a JSON value serialises") + "\n"
}

/// Section 3's rows as JSON.
fn training_json(training: &[TrainRow]) -> Vec<Value> {
    training
        .iter()
        .map(|t| {
            json!({
                "size": t.size,
                "optimizer": t.optimizer.name(),
                "step_ms": t.step_ms,
                "update_step_ms": t.update_step_ms,
                "amortised_ms": t.amortised_ms,
                "tokens_per_s": t.tokens_per_s,
                "state_bytes": t.state_bytes,
                "peak_memory_bytes": t.peak_memory,
            })
        })
        .collect()
}

/// Section 4's rows as JSON.
fn kernels_json(kernel_rows: &[KernelRow]) -> Vec<Value> {
    kernel_rows
        .iter()
        .map(|k| {
            json!({
                "what": k.what,
                "wgsl_ms": k.kernel_ms,
                "portable_ms": k.portable_ms,
                "flops": k.flops,
            })
        })
        .collect()
}

/// What the autotuner chose, as JSON.
fn tuned_json(tuned: &[(TileKey, Tuned)]) -> Vec<Value> {
    tuned
        .iter()
        .map(|(k, tile)| {
            let mut row = json!({
                "kernel": k.kernel,
                "a": k.a,
                "r": k.r,
                "b": k.b,
                "transposed": k.transposed,
                "recovery": k.recovery,
            });
            let choice = match tile {
                Tuned::Tile(t) => json!({"tile": t.tile.side(), "splits": t.splits}),
                Tuned::Norms(ColumnNorms::PerColumn) => json!({"norms": "per-column"}),
                Tuned::Norms(ColumnNorms::Tiled) => json!({"norms": "tiled"}),
                Tuned::Matmul => json!({"matmul": "burn"}),
            };
            if let (Value::Object(row), Value::Object(choice)) = (&mut row, choice) {
                row.extend(choice);
            }
            row
        })
        .collect()
}

/// Write `benchmark.md` and `benchmark.json` into `--out`, each atomically.
pub(crate) fn save(out: &std::path::Path, md: &str, json: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let write = |name: &str, data: &str| {
        write_atomic(&out.join(name), data.as_bytes()).map_err(std::io::Error::other)
    };
    write("benchmark.md", md)?;
    write("benchmark.json", json)
}
