//! The training loop: one run of one optimizer.

use std::path::{Path, PathBuf};

use burn::config::{Config, config_to_json};
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Int, Tensor};

use subtrack::SubTrackReport;
use subtrack::checkpoint::{StateBytes, load_checked, state_bytes};

use super::PretrainError;
use super::ckpt::Checkpoint;
use super::clip::{clip_to, squared_norm};
use super::config::{OptimizerKind, TrainConfig};
use super::data::Corpus;
use super::device::{self, Picked};
use super::files::{Log, Opening, Samples, SubspaceLog, io};
use super::generate::{Sampling, continue_tokens, escape, token_bytes};
use super::meter::Meter;
use super::model::{Llama, LlamaConfig};
use super::panics;
use super::progress::Progress;
use super::report::{LogRow, human_bytes};
use super::schedule::CosineWarmup;

/// How a run treats its output directory.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where `checkpoint.bin`, `log.csv` and `loss.svg` go.
    pub out_dir: PathBuf,
    /// Continue from `out_dir/checkpoint.bin`.
    pub resume: bool,
    /// Start over even if `out_dir` holds a checkpoint.
    pub overwrite: bool,
    /// Print progress.
    pub verbose: bool,
    /// Stop (after writing a checkpoint) once this many steps are done: an interruption.
    pub stop_after: Option<usize>,
}

impl RunOptions {
    /// Defaults: no resume, no overwrite, verbose, run to the end.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            out_dir: out_dir.into(),
            resume: false,
            overwrite: false,
            verbose: true,
            stop_after: None,
        }
    }
}

/// What a run achieved.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// Its peak learning rate.
    pub lr: f64,
    /// Steps completed.
    pub steps: usize,
    /// Held-out loss at the last evaluation (nats/token).
    pub final_eval_loss: f64,
    /// Training loss at the last step (nats/token).
    pub final_train_loss: f64,
    /// Wall time of the steps this invocation ran (seconds, evaluation included).
    pub wall_s: f64,
    /// Training tokens per second over those steps (evaluation excluded).
    pub tokens_per_s: f64,
    /// Optimizer-state bytes at the end.
    pub state: StateBytes,
    /// Peak memory seen (bytes), as [`device::memory_kind`] names it.
    pub peak_memory: Option<u64>,
    /// What `peak_memory` measures.
    pub memory_kind: &'static str,
    /// Training-loss points (step, loss) of the whole run, resumed parts included.
    pub train_curve: Vec<(f64, f64)>,
    /// Held-out loss points (step, loss).
    pub eval_curve: Vec<(f64, f64)>,
    /// Steps skipped because the loss or a gradient was not finite.
    pub skipped_steps: u64,
    /// Subspace updates this invocation performed, summed over projected matrices (initial
    /// bases excluded; 0 for AdamW).
    pub subspace_updates: u64,
    /// The mean over the run's subspace updates (resumed parts included) and projected
    /// matrices of the gradient's energy outside the basis before the update,
    /// ‖G − S·SᵀG‖²/‖G‖² (`subspace.csv`); `None` for AdamW or before the first update.
    pub mean_residual_fraction: Option<f64>,
}

/// Rough bytes a CPU run needs: weights, gradients and two moments, plus activations kept
/// for the backward pass. Used to refuse a run that cannot fit before it starts.
pub fn estimate_bytes(config: &TrainConfig, model: &LlamaConfig) -> u64 {
    let p = model.num_params() as u64;
    let (b, t) = (config.batch_size as u64, config.seq_len as u64);
    let (d, f, v) = (
        model.hidden_size as u64,
        model.intermediate_size as u64,
        model.vocab_size as u64,
    );
    let (l, h) = (model.num_layers as u64, model.num_heads as u64);
    let activations = b * t * (l * (12 * d + 4 * f) + 4 * v) + l * b * h * t * t * 3;
    4 * (4 * p + activations)
}

/// The loss and the global gradient norm, read back to the host together (one sync).
fn read_loss_and_norm(loss: Tensor<1>, grads: &GradientsParams, model: &Llama) -> (f64, f64) {
    let Some(sq) = squared_norm(grads, model) else {
        return (loss.into_scalar::<f32>() as f64, 0.0);
    };
    let device = loss.device();
    let both: Vec<f32> = Tensor::cat(vec![loss, sq.to_device(&device)], 0)
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32 data");
    (both[0] as f64, (both[1] as f64).sqrt())
}

/// Mean held-out loss over `batches` (nats/token).
fn evaluate(model: &Llama, batches: &[(Tensor<2, Int>, Tensor<2, Int>)]) -> f64 {
    let model = model.valid();
    let mut total = 0.0;
    for (x, y) in batches {
        total += model.loss(x.clone(), y.clone()).into_scalar::<f32>() as f64;
    }
    total / batches.len().max(1) as f64
}

/// Bytes of the held-out stream that every evaluation's sample continues.
pub const SAMPLE_PROMPT_BYTES: usize = 48;

/// The sample of an evaluation on a text corpus: (prompt, continuation), escaped, from
/// [`Sampling::during_training`] with the run's seed; `None` on the synthetic corpus.
fn sample(
    model: &Llama,
    config: &TrainConfig,
    corpus: &Corpus,
    device: &Device,
) -> Option<(String, String)> {
    config.data.as_ref()?;
    let prompt = &corpus.valid[..corpus.valid.len().min(SAMPLE_PROMPT_BYTES)];
    if prompt.is_empty() {
        return None;
    }
    let sampling = Sampling::during_training(config.seed);
    let text = continue_tokens(&model.valid(), prompt, config.seq_len, &sampling, device);
    Some((escape(&token_bytes(prompt)), escape(&token_bytes(&text))))
}

/// Train one run. Panics inside Burn (allocation failures among them) come back as errors;
/// the last checkpoint on disk is left as it was.
pub fn train(
    config: &TrainConfig,
    corpus: &Corpus,
    picked: &Picked,
    opts: &RunOptions,
) -> Result<RunSummary, PretrainError> {
    config.validate()?;
    let model_config = config.model(corpus.vocab)?;
    if !picked.is_wgpu {
        let need = estimate_bytes(config, &model_config);
        if let Some(avail) = device::available_memory()
            && need > avail
        {
            return Err(PretrainError::OutOfMemory(format!(
                "size {} at batch {}×{} needs about {} but {} is available; lower --batch-size, --seq-len or --size",
                config.size,
                config.batch_size,
                config.seq_len,
                human_bytes(need),
                human_bytes(avail)
            )));
        }
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train_inner(config, corpus, picked, opts, &model_config)
    }));
    result.unwrap_or_else(|payload| Err(panics::as_error(&panics::message(payload.as_ref()))))
}

/// Load the checkpoint at `path` into `model` and `optim`, refusing one that is corrupt,
/// belongs to another run (any setting but the evaluation, logging and checkpoint
/// intervals differs; the differing ones are named) or is past `config.steps`.
/// Returns the loaded pair and the step to continue from.
fn resume(
    config: &TrainConfig,
    path: &Path,
    model: Llama,
    optim: ModuleOptimizer,
) -> Result<(Llama, ModuleOptimizer, usize), PretrainError> {
    let ckpt = Checkpoint::load(path)?;
    let saved = TrainConfig::load_binary(ckpt.config_json.as_bytes()).map_err(|e| {
        PretrainError::Checkpoint(format!("{}: unreadable config: {e}", path.display()))
    })?;
    // Intervals of evaluation, logging and checkpoints do not change the trajectory, so a
    // resumed run may choose them afresh; everything else must match.
    let saved = saved
        .with_eval_every(config.eval_every)
        .with_eval_batches(config.eval_batches)
        .with_checkpoint_every(config.checkpoint_every)
        .with_log_every(config.log_every);
    if &saved != config {
        let now = config_to_json(config);
        let then = config_to_json(&saved);
        let diff: Vec<String> = then
            .lines()
            .zip(now.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("checkpoint {} vs now {}", a.trim(), b.trim()))
            .collect();
        return Err(PretrainError::Checkpoint(format!(
            "{} belongs to another run: {}",
            path.display(),
            diff.join("; ")
        )));
    }
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(ckpt.model))
        .map_err(|e| PretrainError::Checkpoint(format!("model record: {e}")))?;
    let model = model
        .try_load_record(record)
        .map_err(|e| PretrainError::Checkpoint(format!("model record does not fit: {e}")))?;
    let optim = load_checked(optim, Bytes::from_bytes_vec(ckpt.optimizer), &model)
        .map_err(|e| PretrainError::Checkpoint(e.to_string()))?;
    let start = ckpt.step as usize;
    if start > config.steps {
        return Err(PretrainError::Checkpoint(format!(
            "checkpoint is at step {start}, past --steps {}",
            config.steps
        )));
    }
    Ok((model, optim, start))
}

/// The optimizer and what a training step needs of the run. The model passes through each
/// step by value, so that the optimizer can update its weights in place.
struct Trainer<'a> {
    config: &'a TrainConfig,
    corpus: &'a Corpus,
    /// The autodiff device the batches go to.
    autodiff: Device,
    schedule: CosineWarmup,
    optim: ModuleOptimizer,
    /// Skipped steps in a row, and in all.
    consecutive_bad: u32,
    skipped: u64,
}

/// What one training step did.
struct Stepped {
    /// The learning rate it used.
    lr: f64,
    /// The training loss (nats/token) and the global gradient norm before clipping.
    loss: f64,
    grad_norm: f64,
    /// Whether the step was skipped: the loss or the norm was not finite.
    skipped: bool,
}

impl Trainer<'_> {
    /// Training step `step`: the batch, forward, backward, global-norm clipping and the
    /// optimizer step. It waits on one read-back, the loss and the gradient norm together,
    /// which the log prints and the clipping needs. A non-finite loss or norm skips the
    /// step; ten in a row end the run with [`PretrainError::Diverged`].
    fn step(&mut self, model: Llama, step: usize) -> Result<(Llama, Stepped), PretrainError> {
        let config = self.config;
        let lr = self.schedule.lr(step);
        let (x, y) = self.corpus.train_batch(
            config.seed,
            step as u64,
            config.batch_size,
            config.seq_len,
            &self.autodiff,
        );
        let loss = model.loss(x, y);
        let loss_inner = loss.clone().detach().inner();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let (loss, grad_norm) = read_loss_and_norm(loss_inner, &grads, &model);
        let stepped = Stepped {
            lr,
            loss,
            grad_norm,
            skipped: !(loss.is_finite() && grad_norm.is_finite()),
        };
        if stepped.skipped {
            self.skipped += 1;
            self.consecutive_bad += 1;
            if self.consecutive_bad >= 10 {
                return Err(PretrainError::Diverged(format!(
                    "10 steps in a row with a non-finite loss or gradient (last at step {step}); lower --lr. The last checkpoint is intact"
                )));
            }
            return Ok((model, stepped));
        }
        clip_to(&mut grads, &model, grad_norm, config.grad_clip);
        let model = self.optim.step(lr, model, grads);
        self.consecutive_bad = 0;
        Ok((model, stepped))
    }

    /// Write the checkpoint of `model` at `step` done to `path`, atomically.
    fn save(&self, model: &Llama, path: &Path, step: usize) -> Result<(), PretrainError> {
        let model_bytes = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| PretrainError::Checkpoint(format!("model record: {e}")))?;
        let optim_bytes = self
            .optim
            .into_bytes()
            .map_err(|e| PretrainError::Checkpoint(format!("optimizer record: {e}")))?;
        Checkpoint {
            config_json: config_to_json(self.config),
            step: step as u64,
            model: model_bytes.to_vec(),
            optimizer: optim_bytes.to_vec(),
        }
        .save(path)
    }
}

/// What a run writes and prints beside its steps: evaluations, the log, samples, the
/// subspace diagnostics and the plots.
struct Outputs<'a> {
    config: &'a TrainConfig,
    corpus: &'a Corpus,
    model_config: &'a LlamaConfig,
    kind: OptimizerKind,
    device: Device,
    valid: Vec<(Tensor<2, Int>, Tensor<2, Int>)>,
    progress: Progress,
    log: Log,
    samples: Option<Samples>,
    /// The low-rank optimizer's report and its subspace log (`None` for AdamW).
    subspace: Option<(SubTrackReport, SubspaceLog)>,
    last_eval: f64,
    last_train: f64,
}

impl Outputs<'_> {
    /// The held-out loss after `done` steps, kept as the last evaluation.
    fn evaluate(&mut self, model: &Llama) -> f64 {
        self.last_eval = evaluate(model, &self.valid);
        self.last_eval
    }

    /// Log the state after `done` steps: the CSV row and the progress line.
    fn log(
        &mut self,
        done: usize,
        stepped: &Stepped,
        eval_loss: Option<f64>,
        memory: Option<u64>,
        meter: &Meter,
        stop: usize,
    ) -> Result<(), PretrainError> {
        let tokens_per_step = (self.config.batch_size * self.config.seq_len) as u64;
        let row = LogRow {
            step: done as u64,
            tokens: done as u64 * tokens_per_step,
            train_loss: stepped.loss,
            eval_loss,
            lr: stepped.lr,
            grad_norm: stepped.grad_norm,
            tokens_per_s: meter.interval_rate(),
            elapsed_s: meter.elapsed(),
            memory_bytes: memory,
        };
        self.log.write(&row)?;
        let loss = stepped.loss;
        let eval = eval_loss.map_or(String::new(), |l| {
            format!("  eval {l:.4} (ppl {:.2})", l.exp())
        });
        let short = format!("loss {loss:.4}  {:.0} tok/s", row.tokens_per_s);
        let line = format!(
            "[{}] step {done:>6}/{}  loss {loss:.4}  lr {:.2e}  {:.0} tok/s{eval}",
            self.kind.name(),
            self.config.steps,
            stepped.lr,
            row.tokens_per_s
        );
        let keep = eval_loss.is_some() || done == stop;
        self.progress.step(done as u64, &line, &short, keep);
        Ok(())
    }

    /// The first evaluation of a fresh run, before any step: its row, line and sample.
    fn log_start(&mut self, model: &Llama, memory: Option<u64>) -> Result<(), PretrainError> {
        let l = self.evaluate(model);
        self.log.write(&LogRow {
            step: 0,
            tokens: 0,
            train_loss: f64::NAN,
            eval_loss: Some(l),
            lr: 0.0,
            grad_norm: f64::NAN,
            tokens_per_s: 0.0,
            elapsed_s: 0.0,
            memory_bytes: memory,
        })?;
        self.progress.line(&format!(
            "[{}] step      0  eval {l:.4} (ppl {:.2})",
            self.kind.name(),
            l.exp()
        ));
        self.sample(model, 0)
    }

    /// On a text corpus, what the model writes after the held-out prompt at step `step`:
    /// printed and kept in `samples.txt`.
    fn sample(&mut self, model: &Llama, step: usize) -> Result<(), PretrainError> {
        let Some(samples) = self.samples.as_mut() else {
            return Ok(());
        };
        let Some((prompt, text)) = sample(model, self.config, self.corpus, &self.device) else {
            return Ok(());
        };
        self.progress
            .line(&format!("  sample at step {step}: {prompt} → {text}"));
        samples.write(step, &prompt, &text)
    }

    /// Take the subspace diagnostics formed since the last call into `subspace.csv` and
    /// its plot, and print the latest residual fractions.
    fn take_subspace(&mut self) -> Result<(), PretrainError> {
        let Some((report, log)) = self.subspace.as_mut() else {
            return Ok(());
        };
        let taken = report.take_subspace_diagnostics();
        if taken.is_empty() {
            return Ok(());
        }
        let title = format!(
            "{} — {}: residual fraction ‖G − S·SᵀG‖²/‖G‖² at each subspace update",
            self.kind.label(),
            self.config.size
        );
        let latest = log.write(&taken, self.model_config, &title)?;
        let parts: Vec<String> = latest
            .iter()
            .map(|(matrix, fraction)| format!("{matrix} {fraction:.3}"))
            .collect();
        self.progress.line(&format!(
            "  subspace update at step {}: residual fraction {}",
            taken[taken.len() - 1].step,
            parts.join(", ")
        ));
        Ok(())
    }

    /// Redraw `loss.svg`.
    fn plot_loss(&self) -> Result<(), PretrainError> {
        let title = format!("{} — {}", self.kind.label(), self.config.size);
        self.log
            .plot(&title, self.config.steps, self.corpus.plot_floor())
    }
}

fn train_inner(
    config: &TrainConfig,
    corpus: &Corpus,
    picked: &Picked,
    opts: &RunOptions,
    model_config: &LlamaConfig,
) -> Result<RunSummary, PretrainError> {
    let (mut trainer, mut model, report, start) =
        start_run(config, corpus, picked, opts, model_config)?;
    let mut outputs = open_outputs(config, corpus, picked, opts, model_config, report, start)?;
    let mut meter = Meter::start(&picked.device, picked.is_wgpu);
    let stop = opts.stop_after.unwrap_or(config.steps).min(config.steps);
    if start == 0 {
        let memory = meter.memory();
        outputs.log_start(&model, memory)?;
    }
    let tokens_per_step = (config.batch_size * config.seq_len) as u64;
    for step in start..stop {
        let stepped;
        (model, stepped) = meter.step(tokens_per_step, || trainer.step(model, step))?;
        if stepped.skipped {
            let (loss, norm) = (stepped.loss, stepped.grad_norm);
            outputs.progress.suspend(|| {
                eprintln!("warning: step {step}: loss {loss}, gradient norm {norm}; step skipped")
            });
        }
        outputs.last_train = stepped.loss;
        let (done, memory) = (step + 1, meter.memory());
        let eval_now = done % config.eval_every == 0 || done == config.steps;
        let eval_loss = eval_now.then(|| outputs.evaluate(&model));
        if done % config.log_every == 0 || eval_now || done == stop {
            outputs.log(done, &stepped, eval_loss, memory, &meter, stop)?;
            if eval_now {
                // After the interval's timing: sampling is not training.
                outputs.sample(&model, done)?;
                outputs.take_subspace()?;
            }
            meter.new_interval();
        }
        if done % config.checkpoint_every == 0 || done == stop {
            outputs.take_subspace()?;
            trainer.save(&model, &opts.out_dir.join("checkpoint.bin"), done)?;
            outputs.plot_loss()?;
        }
    }
    outputs.progress.finish();
    let state = state_bytes(&trainer.optim).map_err(|e| PretrainError::Io(e.to_string()))?;
    let (subspace_updates, mean_residual_fraction) = match &outputs.subspace {
        Some((report, log)) => (report.subspace_updates(), log.mean_residual()),
        None => (0, None),
    };
    Ok(RunSummary {
        optimizer: outputs.kind,
        lr: config.lr,
        steps: stop,
        final_eval_loss: outputs.last_eval,
        final_train_loss: outputs.last_train,
        wall_s: meter.elapsed(),
        tokens_per_s: meter.tokens_per_s(),
        state,
        peak_memory: meter.peak(),
        memory_kind: device::memory_kind(picked.is_wgpu),
        train_curve: outputs.log.train,
        eval_curve: outputs.log.eval,
        skipped_steps: trainer.skipped,
        subspace_updates,
        mean_residual_fraction,
    })
}

/// The run's trainer and model, fresh from the seed or resumed from the checkpoint, with
/// the low-rank optimizer's report and the step to start from. A fresh run refuses an
/// output directory that holds a checkpoint unless told to overwrite it.
fn start_run<'a>(
    config: &'a TrainConfig,
    corpus: &'a Corpus,
    picked: &Picked,
    opts: &RunOptions,
    model_config: &LlamaConfig,
) -> Result<(Trainer<'a>, Llama, Option<SubTrackReport>, usize), PretrainError> {
    let autodiff: Device = picked.device.clone().autodiff();
    let ckpt_path = opts.out_dir.join("checkpoint.bin");
    // Initial weights from the seed alone (Burn's CPU generator is process-wide, so other
    // threads drawing from it would otherwise change them); the device is seeded too.
    autodiff.seed(config.seed);
    let mut model = model_config.init_seeded(&autodiff, config.seed)?;
    let (mut optim, report) = config.build_optimizer(model_config)?;
    let mut start = 0usize;
    if opts.resume {
        (model, optim, start) = resume(config, &ckpt_path, model, optim)?;
    } else if ckpt_path.exists() && !opts.overwrite {
        return Err(PretrainError::Checkpoint(format!(
            "{} already holds a checkpoint; pass --resume to continue it, --overwrite to start over, or another --out",
            ckpt_path.display()
        )));
    }
    let trainer = Trainer {
        config,
        corpus,
        autodiff,
        schedule: config.schedule(),
        optim,
        consecutive_bad: 0,
        skipped: 0,
    };
    Ok((trainer, model, report, start))
}

/// The run's outputs: its files in the output directory, opened for a fresh run or one
/// resumed at `start`, the held-out batches and the progress display. With a low-rank
/// optimizer's `report`, turns its subspace diagnostics on.
fn open_outputs<'a>(
    config: &'a TrainConfig,
    corpus: &'a Corpus,
    picked: &Picked,
    opts: &RunOptions,
    model_config: &'a LlamaConfig,
    report: Option<SubTrackReport>,
    start: usize,
) -> Result<Outputs<'a>, PretrainError> {
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(|e| io(&format!("creating {}", out.display()), e))?;
    let opening = if opts.resume {
        Opening::Resumed(start)
    } else {
        Opening::Fresh
    };
    let log = Log::open(out, opening)?;
    let samples = match config.data {
        Some(_) => Some(Samples::open(out, opening)?),
        None => None,
    };
    let subspace = match report {
        Some(report) => {
            report.set_subspace_diagnostics(true);
            Some((report, SubspaceLog::open(out, opening)?))
        }
        None => None,
    };
    let kind = config.optimizer_kind()?;
    let dev = &picked.device;
    let valid = corpus.valid_batches(config.batch_size, config.seq_len, config.eval_batches, dev);
    let last_eval = log.eval.last().map_or(f64::NAN, |p| p.1);
    Ok(Outputs {
        config,
        corpus,
        model_config,
        kind,
        device: dev.clone(),
        valid,
        progress: Progress::new(opts.verbose, kind.name(), start as u64, config.steps as u64),
        log,
        samples,
        subspace,
        last_eval,
        last_train: f64::NAN,
    })
}
