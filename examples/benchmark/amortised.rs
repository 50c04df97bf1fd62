//! Section 2: the amortised optimizer step over T steps including one subspace update, on
//! all weights of a LLaMA layer stack.

use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Tensor};
use subtrack::state_bytes;
use subtrack_llama::device::Picked;
use subtrack_llama::{LlamaConfig, OptimizerKind, TrainConfig};

use crate::{median, sync};

/// Random gradients with the shapes of a module's parameters, rebuilt into a fresh
/// `GradientsParams` for every step.
#[derive(Clone)]
pub(crate) struct Grads {
    pub(crate) one: Vec<(ParamId, Tensor<1>)>,
    pub(crate) two: Vec<(ParamId, Tensor<2>)>,
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
    pub(crate) fn of(model: &impl Module) -> Self {
        let mut grads = Self {
            one: Vec::new(),
            two: Vec::new(),
        };
        model.visit(&mut grads);
        grads
    }

    pub(crate) fn params(&self) -> GradientsParams {
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

pub(crate) struct StepRow {
    pub(crate) optimizer: OptimizerKind,
    pub(crate) per_step_ms: f64,
    pub(crate) updates: u64,
    pub(crate) state_bytes: usize,
    pub(crate) projected_bytes: usize,
}

/// Each optimizer is built once (model, state and the first step, which finds the initial
/// bases, outside the timings) and then timed over `reps` windows of `interval` steps, each
/// holding one subspace update. Windows are interleaved across optimizers, in alternating
/// order (forward on even reps, backward on odd), so that drift in the machine's speed or the
/// allocator's state over the run does not favour whichever optimizer runs first.
pub(crate) fn bench_amortised(
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
