//! The training loop: one run of one optimizer, and the four-way comparison.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::config::{Config, config_to_json};
use burn::module::{Module, ParamGroup};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};

use crate::checkpoint::{StateBytes, load_checked, state_bytes};
use crate::{SubTrackConfig, SubTrackReport};

use super::PretrainError;
use super::ckpt::Checkpoint;
use super::clip::{clip_to, global_norm};
use super::data::Corpus;
use super::device::{self, Picked};
use super::model::{Llama, LlamaConfig, PROJECTED_PARAMS};
use super::report::{Curve, LogRow, csv_prefix, human_bytes, svg_plot, write_text};
use super::schedule::CosineWarmup;

/// The optimizers the job can train with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Burn's AdamW on every parameter.
    AdamW,
    /// GaLore (SVD refresh) on attention and MLP weights, AdamW elsewhere.
    GaLore,
    /// SubTrack-Grad (geodesic tracking) on attention and MLP weights, AdamW elsewhere.
    SubTrackGrad,
    /// SubTrack++ (tracking, projection-aware moments, recovery scaling), AdamW elsewhere.
    SubTrackPlusPlus,
}

impl OptimizerKind {
    /// All four, in the order `--compare` runs them.
    pub const ALL: [Self; 4] = [
        Self::AdamW,
        Self::GaLore,
        Self::SubTrackGrad,
        Self::SubTrackPlusPlus,
    ];

    /// Parse a command-line name: `adamw`, `galore`, `subtrack-grad`, `subtrack++`.
    pub fn parse(name: &str) -> Result<Self, PretrainError> {
        match name.to_ascii_lowercase().as_str() {
            "adamw" => Ok(Self::AdamW),
            "galore" => Ok(Self::GaLore),
            "subtrack-grad" | "subtrack_grad" | "subtrack" => Ok(Self::SubTrackGrad),
            "subtrack++" | "subtrack-plus-plus" | "subtrackpp" => Ok(Self::SubTrackPlusPlus),
            other => Err(PretrainError::invalid(format!(
                "unknown optimizer `{other}`; use adamw, galore, subtrack-grad or subtrack++"
            ))),
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::AdamW => "adamw",
            Self::GaLore => "galore",
            Self::SubTrackGrad => "subtrack-grad",
            Self::SubTrackPlusPlus => "subtrack++",
        }
    }

    /// The display name.
    pub fn label(self) -> &'static str {
        match self {
            Self::AdamW => "AdamW",
            Self::GaLore => "GaLore",
            Self::SubTrackGrad => "SubTrack-Grad",
            Self::SubTrackPlusPlus => "SubTrack++",
        }
    }
}

/// Everything that defines a run. Stored in each checkpoint; a resumed run must match it.
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    /// Model size preset (`9m` … `1b`, see [`LlamaConfig::preset`]).
    #[config(default = "String::from(\"9m\")")]
    pub size: String,
    /// `adamw`, `galore`, `subtrack-grad` or `subtrack++`.
    #[config(default = "String::from(\"subtrack++\")")]
    pub optimizer: String,
    /// Optimizer steps.
    #[config(default = 600)]
    pub steps: usize,
    /// Sequences per batch.
    #[config(default = 16)]
    pub batch_size: usize,
    /// Tokens per sequence.
    #[config(default = 128)]
    pub seq_len: usize,
    /// Peak learning rate.
    #[config(default = 2e-3)]
    pub lr: f64,
    /// Linear warmup steps.
    #[config(default = 50)]
    pub warmup_steps: usize,
    /// Final learning rate as a fraction of the peak.
    #[config(default = 0.1)]
    pub min_lr_ratio: f64,
    /// Global gradient-norm bound.
    #[config(default = 1.0)]
    pub grad_clip: f64,
    /// Decoupled weight decay (all optimizers).
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// Projection rank; `None` takes the size's GaLore rank ([`LlamaConfig::default_rank`]).
    #[config(default = "None")]
    pub rank: Option<usize>,
    /// Subspace update interval T (steps).
    #[config(default = 100)]
    pub update_interval: usize,
    /// Evaluate every this many steps (and at the end).
    #[config(default = 100)]
    pub eval_every: usize,
    /// Validation batches per evaluation.
    #[config(default = 8)]
    pub eval_batches: usize,
    /// Write a checkpoint every this many steps (and at the end).
    #[config(default = 200)]
    pub checkpoint_every: usize,
    /// Log a CSV row and a progress line every this many steps.
    #[config(default = 10)]
    pub log_every: usize,
    /// Seed of the model initialisation, the synthetic corpus and the batch positions.
    #[config(default = 42)]
    pub seed: u64,
    /// A UTF-8 text file to train on instead of the synthetic corpus.
    #[config(default = "None")]
    pub data: Option<String>,
    /// Tokens of synthetic corpus (training + validation).
    #[config(default = 1_000_000)]
    pub synthetic_tokens: usize,
    /// Fraction of the corpus held out for validation.
    #[config(default = 0.1)]
    pub valid_fraction: f64,
}

impl TrainConfig {
    /// The optimizer this config names.
    pub fn optimizer_kind(&self) -> Result<OptimizerKind, PretrainError> {
        OptimizerKind::parse(&self.optimizer)
    }

    /// The model shape for a corpus of `vocab` symbols.
    pub fn model(&self, vocab: usize) -> Result<LlamaConfig, PretrainError> {
        let model = LlamaConfig::preset(&self.size, vocab)?.with_max_seq_len(self.seq_len.max(2));
        model.validate()?;
        Ok(model)
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), PretrainError> {
        let bad = |m: String| Err(PretrainError::invalid(m));
        self.optimizer_kind()?;
        LlamaConfig::preset(&self.size, 2)?;
        for (name, v) in [
            ("steps", self.steps),
            ("batch-size", self.batch_size),
            ("update-interval", self.update_interval),
            ("eval-every", self.eval_every),
            ("eval-batches", self.eval_batches),
            ("checkpoint-every", self.checkpoint_every),
            ("log-every", self.log_every),
        ] {
            if v == 0 {
                return bad(format!("--{name} must be at least 1"));
            }
        }
        if self.seq_len < 2 {
            return bad(format!(
                "--seq-len must be at least 2, got {}",
                self.seq_len
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be positive and finite, got {}", self.lr));
        }
        if self.warmup_steps > self.steps {
            return bad(format!(
                "--warmup-steps {} exceeds --steps {}",
                self.warmup_steps, self.steps
            ));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "--min-lr-ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return bad(format!(
                "--grad-clip must be positive and finite, got {}",
                self.grad_clip
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "--weight-decay must be ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.valid_fraction > 0.0 && self.valid_fraction <= 0.5) {
            return bad(format!(
                "--valid-fraction must be in (0, 0.5], got {}",
                self.valid_fraction
            ));
        }
        let need = 10 * (self.seq_len + 1);
        if self.data.is_none() && (self.synthetic_tokens as f64 * self.valid_fraction) < need as f64
        {
            return bad(format!(
                "--synthetic-tokens {} leaves fewer than {need} validation tokens",
                self.synthetic_tokens
            ));
        }
        let model = LlamaConfig::preset(&self.size, 2)?;
        if let Some(r) = self.rank
            && (r == 0 || r >= model.hidden_size)
        {
            return bad(format!(
                "--rank {r} must be in 1..{} (below the model width)",
                model.hidden_size
            ));
        }
        Ok(())
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> CosineWarmup {
        CosineWarmup {
            peak: self.lr,
            min_ratio: self.min_lr_ratio,
            warmup: self.warmup_steps,
            total: self.steps,
        }
    }

    /// The corpus this config trains on.
    pub fn corpus(&self) -> Result<Corpus, PretrainError> {
        match &self.data {
            Some(path) => {
                Corpus::from_text_file(Path::new(path), self.valid_fraction, self.seq_len)
            }
            None => {
                let valid = (self.synthetic_tokens as f64 * self.valid_fraction) as usize;
                Ok(Corpus::synthetic(
                    self.synthetic_tokens - valid,
                    valid,
                    self.seed,
                ))
            }
        }
    }

    /// The SubTrack configuration of the projected group (`None` for AdamW's runs it
    /// still supplies AdamW's hyper-parameters).
    pub fn subtrack(&self, model: &LlamaConfig) -> SubTrackConfig {
        let base = match self.optimizer_kind() {
            Ok(OptimizerKind::GaLore) => SubTrackConfig::galore(),
            Ok(OptimizerKind::SubTrackGrad) => SubTrackConfig::subtrack_grad(),
            _ => SubTrackConfig::subtrack_plus_plus(),
        };
        base.with_rank(self.rank.unwrap_or_else(|| model.default_rank()))
            .with_update_interval(self.update_interval)
            .with_weight_decay(self.weight_decay)
    }

    /// The optimizer: AdamW on everything, or the SubTrack/GaLore group on
    /// [`PROJECTED_PARAMS`] with AdamW (same betas, ε and decay) on the rest; with the
    /// group's counters (`None` for AdamW).
    pub fn build_optimizer(
        &self,
        model: &LlamaConfig,
    ) -> Result<(ModuleOptimizer, Option<SubTrackReport>), PretrainError> {
        let config = self.subtrack(model);
        let err = |e: crate::SubTrackError| PretrainError::invalid(e.to_string());
        let adamw = ModuleOptimizer::from(config.adamw().map_err(err)?);
        Ok(match self.optimizer_kind()? {
            OptimizerKind::AdamW => (adamw, None),
            _ => {
                let subtrack = config.build().map_err(err)?;
                let report = subtrack.report();
                let group = ParamGroup::from_regex(PROJECTED_PARAMS).expect("valid regex");
                (adamw.with_group(group, subtrack, None), Some(report))
            }
        })
    }
}

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

/// Mean held-out loss over `batches` (nats/token).
fn evaluate(
    model: &Llama,
    batches: &[(
        burn::tensor::Tensor<2, burn::tensor::Int>,
        burn::tensor::Tensor<2, burn::tensor::Int>,
    )],
) -> f64 {
    let model = model.valid();
    let mut total = 0.0;
    for (x, y) in batches {
        total += model.loss(x.clone(), y.clone()).into_scalar::<f32>() as f64;
    }
    total / batches.len().max(1) as f64
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
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
    match result {
        Ok(r) => r,
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            let lower = msg.to_lowercase();
            if lower.contains("out of memory")
                || lower.contains("outofmemory")
                || lower.contains("allocat")
            {
                Err(PretrainError::OutOfMemory(format!(
                    "{msg}; lower --batch-size, --seq-len or --size (the last checkpoint is intact)"
                )))
            } else {
                Err(PretrainError::Diverged(format!(
                    "the training step panicked: {msg}"
                )))
            }
        }
    }
}

fn train_inner(
    config: &TrainConfig,
    corpus: &Corpus,
    picked: &Picked,
    opts: &RunOptions,
    model_config: &LlamaConfig,
) -> Result<RunSummary, PretrainError> {
    let kind = config.optimizer_kind()?;
    let dev = picked.device.clone();
    let ad: Device = dev.clone().autodiff();
    let out = &opts.out_dir;
    let ckpt_path = out.join("checkpoint.bin");
    let csv_path = out.join("log.csv");
    let svg_path = out.join("loss.svg");
    let io = |what: &str, e: std::io::Error| PretrainError::Io(format!("{what}: {e}"));

    ad.seed(config.seed);
    let mut model = model_config.init(&ad)?;
    let (mut optim, report) = config.build_optimizer(model_config)?;
    let mut start = 0usize;
    if opts.resume {
        let ckpt = Checkpoint::load(&ckpt_path)?;
        let saved = TrainConfig::load_binary(ckpt.config_json.as_bytes()).map_err(|e| {
            PretrainError::Checkpoint(format!("{}: unreadable config: {e}", ckpt_path.display()))
        })?;
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
                ckpt_path.display(),
                diff.join("; ")
            )));
        }
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(ckpt.model))
            .map_err(|e| PretrainError::Checkpoint(format!("model record: {e}")))?;
        model = model
            .try_load_record(record)
            .map_err(|e| PretrainError::Checkpoint(format!("model record does not fit: {e}")))?;
        optim = load_checked(optim, Bytes::from_bytes_vec(ckpt.optimizer), &model)
            .map_err(|e| PretrainError::Checkpoint(e.to_string()))?;
        start = ckpt.step as usize;
        if start > config.steps {
            return Err(PretrainError::Checkpoint(format!(
                "checkpoint is at step {start}, past --steps {}",
                config.steps
            )));
        }
    } else if ckpt_path.exists() && !opts.overwrite {
        return Err(PretrainError::Checkpoint(format!(
            "{} already holds a checkpoint; pass --resume to continue it, --overwrite to start over, or another --out",
            ckpt_path.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| io(&format!("creating {}", out.display()), e))?;

    // The CSV log: rows up to the checkpoint's step survive a resume.
    let csv_text = if opts.resume {
        csv_prefix(&csv_path, start as u64)
    } else {
        format!("{}\n", super::report::CSV_HEADER)
    };
    let (mut train_curve, mut eval_curve) = (Vec::new(), Vec::new());
    for line in csv_text.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let step = cols[0].parse::<f64>().unwrap_or(0.0);
        if let Ok(l) = cols.get(2).unwrap_or(&"").parse::<f64>() {
            train_curve.push((step, l));
        }
        if let Ok(l) = cols.get(3).unwrap_or(&"").parse::<f64>() {
            eval_curve.push((step, l));
        }
    }
    write_text(&csv_path, &csv_text)?;
    let mut csv = std::fs::OpenOptions::new()
        .append(true)
        .open(&csv_path)
        .map_err(|e| io("opening the CSV log", e))?;

    let schedule = config.schedule();
    let valid = corpus.valid_batches(config.batch_size, config.seq_len, config.eval_batches, &dev);
    let tokens_per_step = (config.batch_size * config.seq_len) as u64;
    let tty = std::io::stdout().is_terminal();
    let memory_kind = device::memory_kind(picked.is_wgpu);
    device::reset_peak();
    let mut peak_memory = device::memory_in_use(&dev, picked.is_wgpu);
    let started = Instant::now();
    let mut interval_start = Instant::now();
    let mut interval_tokens = 0u64;
    let mut train_seconds = 0.0;
    let mut trained_tokens = 0u64;
    let mut last_train = f64::NAN;
    let mut last_eval = eval_curve.last().map_or(f64::NAN, |p: &(f64, f64)| p.1);
    let mut skipped = 0u64;
    let mut consecutive_bad = 0u32;
    let stop = opts.stop_after.unwrap_or(config.steps).min(config.steps);
    if start == 0 {
        let l = evaluate(&model, &valid);
        eval_curve.push((0.0, l));
        last_eval = l;
        let row = LogRow {
            step: 0,
            tokens: 0,
            train_loss: f64::NAN,
            eval_loss: Some(l),
            lr: 0.0,
            grad_norm: f64::NAN,
            tokens_per_s: 0.0,
            elapsed_s: 0.0,
            memory_bytes: peak_memory,
        };
        writeln!(csv, "{}", row.to_csv()).map_err(|e| io("writing the CSV log", e))?;
        if opts.verbose {
            println!(
                "[{}] step      0  eval {l:.4} (ppl {:.2})",
                kind.name(),
                l.exp()
            );
        }
    }

    let save = |model: &Llama, optim: &ModuleOptimizer, step: usize| -> Result<(), PretrainError> {
        let model_bytes = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| PretrainError::Checkpoint(format!("model record: {e}")))?;
        let optim_bytes = optim
            .into_bytes()
            .map_err(|e| PretrainError::Checkpoint(format!("optimizer record: {e}")))?;
        Checkpoint {
            config_json: config_to_json(config),
            step: step as u64,
            model: model_bytes.to_vec(),
            optimizer: optim_bytes.to_vec(),
        }
        .save(&ckpt_path)
    };

    for step in start..stop {
        let step_start = Instant::now();
        let lr = schedule.lr(step);
        let (x, y) = corpus.train_batch(
            config.seed,
            step as u64,
            config.batch_size,
            config.seq_len,
            &ad,
        );
        let loss = model.loss(x, y);
        let loss_value = loss.clone().into_scalar::<f32>() as f64;
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = global_norm(&grads, &model);
        if loss_value.is_finite() && norm.is_finite() {
            clip_to(&mut grads, &model, norm, config.grad_clip);
            model = optim.step(lr, model, grads);
            consecutive_bad = 0;
        } else {
            skipped += 1;
            consecutive_bad += 1;
            eprintln!(
                "warning: step {step}: loss {loss_value}, gradient norm {norm}; step skipped"
            );
            if consecutive_bad >= 10 {
                return Err(PretrainError::Diverged(format!(
                    "10 steps in a row with a non-finite loss or gradient (last at step {step}); lower --lr. The last checkpoint is intact"
                )));
            }
        }
        let done = step + 1;
        last_train = loss_value;
        train_seconds += step_start.elapsed().as_secs_f64();
        trained_tokens += tokens_per_step;
        interval_tokens += tokens_per_step;
        let memory = device::memory_in_use(&dev, picked.is_wgpu);
        peak_memory = peak_memory.max(memory);

        let eval_now = done % config.eval_every == 0 || done == config.steps;
        let eval_loss = if eval_now {
            let l = evaluate(&model, &valid);
            last_eval = l;
            eval_curve.push((done as f64, l));
            Some(l)
        } else {
            None
        };
        let log_now = done % config.log_every == 0 || eval_now || done == stop;
        if log_now {
            let secs = interval_start.elapsed().as_secs_f64().max(1e-9);
            let row = LogRow {
                step: done as u64,
                tokens: done as u64 * tokens_per_step,
                train_loss: loss_value,
                eval_loss,
                lr,
                grad_norm: norm,
                tokens_per_s: interval_tokens as f64 / secs,
                elapsed_s: started.elapsed().as_secs_f64(),
                memory_bytes: memory,
            };
            writeln!(csv, "{}", row.to_csv()).map_err(|e| io("writing the CSV log", e))?;
            train_curve.push((done as f64, loss_value));
            if opts.verbose {
                let eval = eval_loss.map_or(String::new(), |l| {
                    format!("  eval {l:.4} (ppl {:.2})", l.exp())
                });
                let line = format!(
                    "[{}] step {done:>6}/{}  loss {loss_value:.4}  lr {lr:.2e}  {:.0} tok/s{eval}",
                    kind.name(),
                    config.steps,
                    row.tokens_per_s
                );
                if tty {
                    print!("\r\x1b[2K{line}");
                    if eval_loss.is_some() || done == stop {
                        println!();
                    }
                    let _ = std::io::stdout().flush();
                } else {
                    println!("{line}");
                }
            }
            interval_start = Instant::now();
            interval_tokens = 0;
        }
        if done % config.checkpoint_every == 0 || done == stop {
            save(&model, &optim, done)?;
            let curves = [
                Curve {
                    label: "train",
                    points: train_curve.clone(),
                },
                Curve {
                    label: "eval",
                    points: eval_curve.clone(),
                },
            ];
            let floor = corpus.valid_floor.map(|f| (f, "source entropy (floor)"));
            write_text(
                &svg_path,
                &svg_plot(
                    &format!("{} — {}", kind.label(), config.size),
                    &curves,
                    floor,
                ),
            )?;
        }
    }
    peak_memory = peak_memory.max(device::peak_memory(picked.is_wgpu));
    let state = state_bytes(&optim).map_err(|e| PretrainError::Io(e.to_string()))?;
    Ok(RunSummary {
        optimizer: kind,
        steps: stop,
        final_eval_loss: last_eval,
        final_train_loss: last_train,
        wall_s: started.elapsed().as_secs_f64(),
        tokens_per_s: trained_tokens as f64 / train_seconds.max(1e-9),
        state,
        peak_memory,
        memory_kind,
        train_curve,
        eval_curve,
        skipped_steps: skipped,
        subspace_updates: report.map_or(0, |r| r.subspace_updates()),
    })
}

/// Run all four optimizers on the same corpus, seed and config (each in `out_dir/<name>`),
/// then write `compare.csv`, `compare.md` and an overlaid `loss.svg` in `out_dir`.
pub fn compare(
    config: &TrainConfig,
    corpus: &Corpus,
    picked: &Picked,
    opts: &RunOptions,
) -> Result<(Vec<RunSummary>, String), PretrainError> {
    let mut summaries = Vec::new();
    for kind in OptimizerKind::ALL {
        let run_config = config.clone().with_optimizer(kind.name().to_string());
        let run_opts = RunOptions {
            out_dir: opts.out_dir.join(kind.name().replace("++", "pp")),
            ..opts.clone()
        };
        summaries.push(train(&run_config, corpus, picked, &run_opts)?);
    }
    let table = compare_table(&summaries, corpus, picked);
    write_text(&opts.out_dir.join("compare.md"), &table)?;
    write_text(&opts.out_dir.join("compare.csv"), &compare_csv(&summaries))?;
    let curves: Vec<Curve> = summaries
        .iter()
        .map(|s| Curve {
            label: s.optimizer.label(),
            points: s.eval_curve.clone(),
        })
        .collect();
    let floor = corpus.valid_floor.map(|f| (f, "source entropy (floor)"));
    write_text(
        &opts.out_dir.join("loss.svg"),
        &svg_plot(
            &format!(
                "held-out loss, llama {} on {}",
                config.size, picked.description
            ),
            &curves,
            floor,
        ),
    )?;
    Ok((summaries, table))
}

/// Header of `compare.csv`.
pub const COMPARE_CSV_HEADER: &str = "optimizer,final_eval_loss,final_train_loss,wall_s,tokens_per_s,state_bytes,projected_state_bytes,dense_state_bytes,peak_memory_bytes,skipped_steps";

fn compare_csv(summaries: &[RunSummary]) -> String {
    let mut s = format!("{COMPARE_CSV_HEADER}\n");
    for r in summaries {
        s.push_str(&format!(
            "{},{:.6},{:.6},{:.3},{:.1},{},{},{},{},{}\n",
            r.optimizer.name(),
            r.final_eval_loss,
            r.final_train_loss,
            r.wall_s,
            r.tokens_per_s,
            r.state.total,
            r.state.projected,
            r.state.dense,
            r.peak_memory.map_or(String::new(), |m| m.to_string()),
            r.skipped_steps
        ));
    }
    s
}

/// The markdown comparison table.
pub fn compare_table(summaries: &[RunSummary], corpus: &Corpus, picked: &Picked) -> String {
    let mut s = format!(
        "Device: {}\nData: {}\n",
        picked.description, corpus.description
    );
    if let (Some(h), Some(f)) = (corpus.entropy_rate, corpus.valid_floor) {
        s.push_str(&format!(
            "Loss floor: entropy rate {h:.4} nats/token; the source's own loss on the held-out split {f:.4}\n"
        ));
    }
    let memory_kind = summaries.first().map_or("", |r| r.memory_kind);
    s.push_str(&format!(
        "\n| optimizer | final eval loss | wall time (s) | tokens/s | optimizer state | peak memory ({memory_kind}) |\n|---|---|---|---|---|---|\n"
    ));
    for r in summaries {
        s.push_str(&format!(
            "| {} | {:.4} | {:.1} | {:.0} | {} | {} |\n",
            r.optimizer.label(),
            r.final_eval_loss,
            r.wall_s,
            r.tokens_per_s,
            human_bytes(r.state.total as u64),
            r.peak_memory.map_or("n/a".into(), human_bytes)
        ));
    }
    s
}

/// Parse a `compare.csv` back: (optimizer, final eval loss, state bytes) per row.
pub fn parse_compare_csv(text: &str) -> Result<Vec<(String, f64, usize)>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(COMPARE_CSV_HEADER) {
        return Err("unexpected header".into());
    }
    lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            if c.len() != COMPARE_CSV_HEADER.split(',').count() {
                return Err(format!("bad row `{l}`"));
            }
            Ok((
                c[0].to_string(),
                c[1].parse().map_err(|e| format!("{e} in `{l}`"))?,
                c[5].parse().map_err(|e| format!("{e} in `{l}`"))?,
            ))
        })
        .collect()
}

/// Output directory for `--out` left unset.
pub fn default_out_dir(compare: bool, kind: OptimizerKind) -> PathBuf {
    if compare {
        PathBuf::from("runs/compare")
    } else {
        PathBuf::from("runs").join(kind.name().replace("++", "pp"))
    }
}
