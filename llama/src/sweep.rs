//! `--sweep`: a short learning-rate sweep per optimizer. Each optimizer runs at its rate
//! times each factor, on the same data, seed and settings (each run in
//! `out_dir/<name>/lr-<rate>`); `sweep.csv` and `sweep.md` in `out_dir` give every final
//! held-out loss and each optimizer's best rate.

use super::PretrainError;
use super::config::{LearningRates, OptimizerKind, TrainConfig};
use super::data::Corpus;
use super::device::Picked;
use super::report::write_text;
use super::run::{RunOptions, train};

/// The factors the rates are multiplied by where none are given.
pub const DEFAULT_FACTORS: [f64; 3] = [0.5, 1.0, 2.0];

/// Header of `sweep.csv`.
pub const SWEEP_CSV_HEADER: &str = "optimizer,lr,final_eval_loss";

/// One run of the sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepPoint {
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// Its peak learning rate.
    pub lr: f64,
    /// Held-out loss at the end (nats/token); NaN where the run diverged.
    pub final_eval_loss: f64,
}

/// One optimizer's best point of a sweep: the lowest final loss, and whether its rate is at
/// an end of the rates tried (then the best may lie beyond them).
pub fn best(points: &[SweepPoint], kind: OptimizerKind) -> Option<(&SweepPoint, bool)> {
    let mine: Vec<&SweepPoint> = points.iter().filter(|p| p.optimizer == kind).collect();
    let best = mine
        .iter()
        .filter(|p| p.final_eval_loss.is_finite())
        .min_by(|a, b| a.final_eval_loss.total_cmp(&b.final_eval_loss))?;
    let lowest = mine.iter().map(|p| p.lr).fold(f64::INFINITY, f64::min);
    let highest = mine.iter().map(|p| p.lr).fold(0.0, f64::max);
    let at_edge = mine.len() > 1 && (best.lr == lowest || best.lr == highest);
    Some((best, at_edge))
}

/// Sweep each of `kinds` over its rate in `rates` times each of `factors`. A run that
/// diverges is recorded with a NaN loss and the sweep goes on; any other error stops it.
pub fn sweep(
    config: &TrainConfig,
    kinds: &[OptimizerKind],
    rates: &LearningRates,
    factors: &[f64],
    corpus: &Corpus,
    picked: &Picked,
    opts: &RunOptions,
) -> Result<(Vec<SweepPoint>, String), PretrainError> {
    if factors.is_empty() || factors.iter().any(|f| !f.is_finite() || *f <= 0.0) {
        return Err(PretrainError::invalid(format!(
            "--sweep-factors must be finite and > 0, got {factors:?}"
        )));
    }
    let mut points = Vec::new();
    for &kind in kinds {
        for &factor in factors {
            let lr = rates.of(kind) * factor;
            let run_config = config
                .clone()
                .with_optimizer(kind.name().to_string())
                .with_lr(lr);
            let run_opts = RunOptions {
                out_dir: opts
                    .out_dir
                    .join(kind.dir_name())
                    .join(format!("lr-{lr:e}")),
                ..opts.clone()
            };
            let final_eval_loss = match train(&run_config, corpus, picked, &run_opts) {
                Ok(summary) => summary.final_eval_loss,
                Err(PretrainError::Diverged(why)) => {
                    eprintln!("{} at lr {lr:e} diverged: {why}", kind.label());
                    f64::NAN
                }
                Err(e) => return Err(e),
            };
            points.push(SweepPoint {
                optimizer: kind,
                lr,
                final_eval_loss,
            });
        }
    }
    let table = sweep_table(&points, kinds, config, corpus, picked);
    write_text(&opts.out_dir.join("sweep.md"), &table)?;
    write_text(&opts.out_dir.join("sweep.csv"), &sweep_csv(&points))?;
    Ok((points, table))
}

fn sweep_csv(points: &[SweepPoint]) -> String {
    let mut s = format!("{SWEEP_CSV_HEADER}\n");
    for p in points {
        s.push_str(&format!(
            "{},{:e},{:.6}\n",
            p.optimizer.name(),
            p.lr,
            p.final_eval_loss
        ));
    }
    s
}

/// The markdown table: per optimizer, every rate tried with its loss, and the best.
pub fn sweep_table(
    points: &[SweepPoint],
    kinds: &[OptimizerKind],
    config: &TrainConfig,
    corpus: &Corpus,
    picked: &Picked,
) -> String {
    let mut s = format!(
        "Device: {}\nData: {}\nSweep: llama {}, {} steps of {}×{} tokens, seed {}\n\n| optimizer | final eval loss at each peak lr | best lr | best loss |\n|---|---|---|---|\n",
        picked.description,
        corpus.description,
        config.size,
        config.steps,
        config.batch_size,
        config.seq_len,
        config.seed
    );
    let mut edges = Vec::new();
    for &kind in kinds {
        let tried: Vec<String> = points
            .iter()
            .filter(|p| p.optimizer == kind)
            .map(|p| format!("{:e}: {:.4}", p.lr, p.final_eval_loss))
            .collect();
        let (lr, loss) = match best(points, kind) {
            Some((b, at_edge)) => {
                if at_edge {
                    edges.push(kind.label());
                }
                (format!("{:e}", b.lr), format!("{:.4}", b.final_eval_loss))
            }
            None => ("—".into(), "—".into()),
        };
        s.push_str(&format!(
            "| {} | {} | {lr} | {loss} |\n",
            kind.label(),
            tried.join(", ")
        ));
    }
    if !edges.is_empty() {
        s.push_str(&format!(
            "\nThe best rate of {} is at an end of the rates tried: sweep again around it (--lr-dense, --lr-low-rank).\n",
            edges.join(", ")
        ));
    }
    s
}
