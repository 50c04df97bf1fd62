//! Section 3: the whole training step of the toy LLaMA, with optimizer-state bytes and
//! peak memory.

use std::time::Instant;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
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

/// One size's set-up of section 3: the model shape, the batches, the routes.
struct Bench<'a> {
    picked: &'a Picked,
    dev: Device,
    corpus: Corpus,
    model_config: LlamaConfig,
    size: &'a str,
    batch: usize,
    seq: usize,
    wgsl: bool,
    cpu: bool,
}

/// An optimizer's model (taken out while it steps), optimizer and report.
type Built = (Llama, ModuleOptimizer, Option<SubTrackReport>);

/// Subspace updates every t = 3 steps (k = 3, 6, …), so that both passes hold one.
const T: usize = 3;

impl Bench<'_> {
    /// A fresh model (seed 5) and `kind`'s optimizer.
    fn build(&self, kind: OptimizerKind) -> Built {
        let config = TrainConfig::new()
            .with_size(self.size.into())
            .with_optimizer(kind.name().into())
            .with_update_interval(T)
            .with_wgsl_kernels(self.wgsl)
            .with_cpu_kernels(self.cpu);
        self.dev.seed(5);
        let model = self.model_config.init(&self.dev).expect("model");
        let (optim, report) = config
            .build_optimizer(&self.model_config)
            .expect("optimizer");
        (model, optim, report)
    }

    /// One training step; returns the model, its seconds and whether it updated a subspace.
    fn train_step(
        &self,
        model: Llama,
        optim: &mut ModuleOptimizer,
        report: &Option<SubTrackReport>,
        step: usize,
    ) -> (Llama, f64, bool) {
        let updates = |r: &Option<SubTrackReport>| r.as_ref().map_or(0, |r| r.subspace_updates());
        let before = updates(report);
        let start = Instant::now();
        let (x, y) = self
            .corpus
            .train_batch(5, step as u64, self.batch, self.seq, &self.dev);
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
    }

    /// Pass 1: each optimizer alone, k = 0 … 3 (the initial bases at k = 0, an update at
    /// 3), and its peak memory there.
    fn peaks(&self, kinds: &[OptimizerKind]) -> Vec<Option<u64>> {
        let (device, is_wgpu) = (&self.picked.device, self.picked.is_wgpu);
        kinds
            .iter()
            .map(|&kind| {
                device::reset_peak();
                let (mut model, mut optim, report) = self.build(kind);
                let mut peak = device::memory_in_use(device, is_wgpu);
                for step in 0..=T {
                    model = self.train_step(model, &mut optim, &report, step).0;
                    peak = peak.max(device::memory_in_use(device, is_wgpu));
                }
                peak.max(device::peak_memory(is_wgpu))
            })
            .collect()
    }

    /// Pass 2: all side by side. k = 0 (the initial bases) is untimed; k = 1 … n are timed,
    /// n = 2·reps ≥ 6, so that each median has several steps: about 2n/3 regular steps and
    /// n/3 update steps (k = 3, 6, …). Per optimizer: its optimizer, and the seconds of its
    /// regular and its update steps.
    fn timed(&self, kinds: &[OptimizerKind], reps: usize) -> Vec<Slot> {
        let mut slots: Vec<Slot> = kinds
            .iter()
            .map(|&kind| {
                let (model, mut optim, report) = self.build(kind);
                let model = self.train_step(model, &mut optim, &report, 0).0;
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
                    self.train_step(slot.take().expect("model"), optim, report, step);
                if updated {
                    update_steps.push(secs);
                } else {
                    regular.push(secs);
                }
                *slot = Some(model);
            }
        }
        slots
    }
}

/// An optimizer of pass 2: its model (taken out while it steps), optimizer, report, and
/// the seconds of its regular and its update steps.
type Slot = (
    Option<Llama>,
    ModuleOptimizer,
    Option<SubTrackReport>,
    Vec<f64>,
    Vec<f64>,
);

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
    let corpus = Corpus::synthetic(200_000, 20_000, 1);
    let model_config = LlamaConfig::preset(size, corpus.vocab)
        .expect("preset")
        .with_max_seq_len(seq);
    let bench = Bench {
        picked,
        dev: picked.device.clone().autodiff(),
        corpus,
        model_config,
        size,
        batch,
        seq,
        wgsl,
        cpu,
    };
    // One untimed AdamW step first: the CPU backend keeps per-shape scratch buffers after
    // their first use, which would otherwise land in the first optimizer's peak memory.
    {
        let (model, mut optim, report) = bench.build(OptimizerKind::AdamW);
        let _ = bench.train_step(model, &mut optim, &report, 0);
    }
    let peaks = bench.peaks(kinds);
    let slots = bench.timed(kinds, reps);
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
