//! The training loop: one run of one optimizer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::config::{Config, config_to_json};
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Int, Tensor};

use subtrack::checkpoint::{StateBytes, load_checked, state_bytes};

use super::PretrainError;
use super::ckpt::Checkpoint;
use super::clip::{clip_to, squared_norm};
use super::config::{OptimizerKind, TrainConfig};
use super::data::Corpus;
use super::device::{self, Picked};
use super::generate::{Sampling, continue_tokens, escape, token_bytes};
use super::model::{Llama, LlamaConfig};
use super::panics;
use super::progress::Progress;
use super::report::{
    Curve, LogRow, csv_prefix, curves_from_csv, human_bytes, svg_plot, write_text,
};
use super::subspace::{self, SUBSPACE_CSV_HEADER};

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

/// The lines of `path` (samples.txt) for steps up to `step`; empty where it is missing.
fn samples_prefix(path: &Path, step: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|line| {
            line.strip_prefix("step ")
                .and_then(|rest| rest.split('\t').next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect()
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
    let samples_path = out.join("samples.txt");
    let subspace_path = out.join("subspace.csv");
    let subspace_svg = out.join("subspace.svg");
    let io = |what: &str, e: std::io::Error| PretrainError::Io(format!("{what}: {e}"));

    // Initial weights from the seed alone (Burn's CPU generator is process-wide, so other
    // threads drawing from it would otherwise change them); the device is seeded too.
    ad.seed(config.seed);
    let mut model = model_config.init_seeded(&ad, config.seed)?;
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
    std::fs::create_dir_all(out).map_err(|e| io(&format!("creating {}", out.display()), e))?;

    // The CSV log: rows up to the checkpoint's step survive a resume.
    let csv_text = if opts.resume {
        csv_prefix(&csv_path, start as u64)
    } else {
        format!("{}\n", super::report::CSV_HEADER)
    };
    let (mut train_curve, mut eval_curve) = curves_from_csv(&csv_text);
    write_text(&csv_path, &csv_text)?;
    let mut csv = std::fs::OpenOptions::new()
        .append(true)
        .open(&csv_path)
        .map_err(|e| io("opening the CSV log", e))?;

    let schedule = config.schedule();
    let valid = corpus.valid_batches(config.batch_size, config.seq_len, config.eval_batches, &dev);
    let tokens_per_step = (config.batch_size * config.seq_len) as u64;
    let progress = Progress::new(opts.verbose, kind.name(), start as u64, config.steps as u64);
    // Each evaluation's sample on a text corpus, in samples.txt beside the CSV log: one line
    // per evaluation, "step N", the prompt and the continuation, tab-separated and escaped.
    // A resumed run keeps the lines up to its checkpoint's step.
    let mut samples = match config.data {
        None => None,
        Some(_) => {
            let kept = if opts.resume {
                samples_prefix(&samples_path, start)
            } else {
                String::new()
            };
            write_text(&samples_path, &kept)?;
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&samples_path)
                .map_err(|e| io("opening the samples", e))?;
            Some(file)
        }
    };
    let write_sample = |model: &Llama,
                        step: usize,
                        samples: &mut Option<std::fs::File>|
     -> Result<(), PretrainError> {
        let (Some(file), Some((prompt, text))) =
            (samples.as_mut(), sample(model, config, corpus, &dev))
        else {
            return Ok(());
        };
        progress.line(&format!("  sample at step {step}: {prompt} → {text}"));
        writeln!(file, "step {step}\t{prompt}\t{text}").map_err(|e| io("writing the samples", e))
    };
    // The subspace diagnostics of a low-rank run, in subspace.csv (rows of updates before
    // the checkpoint's step survive a resume) and subspace.svg, rewritten whenever new
    // rows are taken: at each evaluation and checkpoint, outside the timed steps.
    let mut subspace_csv = match &report {
        None => None,
        Some(report) => {
            report.set_subspace_diagnostics(true);
            let text = if opts.resume {
                subspace::csv_prefix(
                    &std::fs::read_to_string(&subspace_path).unwrap_or_default(),
                    start,
                )
            } else {
                format!("{SUBSPACE_CSV_HEADER}\n")
            };
            write_text(&subspace_path, &text)?;
            Some(text)
        }
    };
    let take_subspace = |csv: &mut Option<String>| -> Result<(), PretrainError> {
        let (Some(report), Some(text)) = (&report, csv.as_mut()) else {
            return Ok(());
        };
        let taken = report.take_subspace_diagnostics();
        if taken.is_empty() {
            return Ok(());
        }
        let rows = subspace::csv_rows(&taken, model_config);
        let header = format!("{SUBSPACE_CSV_HEADER}\n");
        let latest = subspace::residual_curves(&format!("{header}{rows}"));
        let parts: Vec<String> = latest
            .iter()
            .map(|(matrix, points)| format!("{matrix} {:.3}", points[points.len() - 1].1))
            .collect();
        progress.line(&format!(
            "  subspace update at step {}: residual fraction {}",
            taken[taken.len() - 1].step,
            parts.join(", ")
        ));
        text.push_str(&rows);
        write_text(&subspace_path, text)?;
        let curves = subspace::residual_curves(text);
        let curves: Vec<Curve> = curves
            .iter()
            .map(|(label, points)| Curve {
                label,
                points: points.clone(),
            })
            .collect();
        write_text(
            &subspace_svg,
            &svg_plot(
                &format!(
                    "{} — {}: residual fraction ‖G − S·SᵀG‖²/‖G‖² at each subspace update",
                    kind.label(),
                    config.size
                ),
                &curves,
                None,
            ),
        )
    };
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
        progress.line(&format!(
            "[{}] step      0  eval {l:.4} (ppl {:.2})",
            kind.name(),
            l.exp()
        ));
        write_sample(&model, 0, &mut samples)?;
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
        let loss_inner = loss.clone().detach().inner();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let (loss_value, norm) = read_loss_and_norm(loss_inner, &grads, &model);
        if loss_value.is_finite() && norm.is_finite() {
            clip_to(&mut grads, &model, norm, config.grad_clip);
            model = optim.step(lr, model, grads);
            consecutive_bad = 0;
        } else {
            skipped += 1;
            consecutive_bad += 1;
            progress.suspend(|| {
                eprintln!(
                    "warning: step {step}: loss {loss_value}, gradient norm {norm}; step skipped"
                )
            });
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
            let eval = eval_loss.map_or(String::new(), |l| {
                format!("  eval {l:.4} (ppl {:.2})", l.exp())
            });
            let short = format!("loss {loss_value:.4}  {:.0} tok/s", row.tokens_per_s);
            let line = format!(
                "[{}] step {done:>6}/{}  loss {loss_value:.4}  lr {lr:.2e}  {:.0} tok/s{eval}",
                kind.name(),
                config.steps,
                row.tokens_per_s
            );
            progress.step(
                done as u64,
                &line,
                &short,
                eval_loss.is_some() || done == stop,
            );
            if eval_now {
                // After the interval's timing: sampling is not training.
                write_sample(&model, done, &mut samples)?;
                take_subspace(&mut subspace_csv)?;
            }
            interval_start = Instant::now();
            interval_tokens = 0;
        }
        if done % config.checkpoint_every == 0 || done == stop {
            take_subspace(&mut subspace_csv)?;
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
            let floor = corpus.plot_floor();
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
    progress.finish();
    peak_memory = peak_memory.max(device::peak_memory(picked.is_wgpu));
    let state = state_bytes(&optim).map_err(|e| PretrainError::Io(e.to_string()))?;
    let mean_residual_fraction = subspace_csv.as_deref().and_then(subspace::mean_residual);
    Ok(RunSummary {
        optimizer: kind,
        lr: config.lr,
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
        mean_residual_fraction,
    })
}
