//! Section 3: the whole training step of the toy LLaMA, with optimizer-state bytes and
//! peak memory.

use std::time::Instant;

use burn::optim::{GradientsParams, ModuleOptimizer};
use subtrack::{SubTrackReport, state_bytes};
use subtrack_llama::device::{self, Picked};
use subtrack_llama::{Corpus, Llama, LlamaConfig, OptimizerKind, TrainConfig};

use crate::{median, sync};

pub(crate) struct TrainRow {
    pub(crate) size: String,
    pub(crate) optimizer: OptimizerKind,
    pub(crate) step_ms: f64,
    pub(crate) update_step_ms: f64,
    pub(crate) amortised_ms: f64,
    pub(crate) tokens_per_s: f64,
    pub(crate) state_bytes: usize,
    pub(crate) peak_memory: Option<u64>,
}

/// Section 3 at one model size; `(size, batch, seq)` names the preset and the batch shape.
///
/// Two passes. The first runs each optimizer alone for its warm-up and takes its peak
/// memory there; the warm-up also compiles (and autotunes) its kernels and holds a subspace
/// update. The second builds them all again and times their steps in turn, one step of each
/// optimizer after another, in alternating order, so that the machine's drift falls on all
/// of them alike and the ratios to AdamW are side by side.
pub(crate) fn bench_training(
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
