//! `--compare`: the four optimizers on the same data and seed, and the table, CSV and
//! overlaid plot they produce.

use super::PretrainError;
use super::config::{LearningRates, OptimizerKind, TrainConfig};
use super::data::Corpus;
use super::device::Picked;
use super::report::{Axis, Curve, human_bytes, svg_plot, write_text};
use super::run::{RunOptions, RunSummary, train};

/// Run all four optimizers on the same corpus, seed and config, each at its own peak
/// learning rate from `rates` (each in `out_dir/<name>`), then write `compare.csv`,
/// `compare.md` and an overlaid `loss.svg` in `out_dir`. `config.lr` is not used.
pub fn compare(
    config: &TrainConfig,
    rates: &LearningRates,
    corpus: &Corpus,
    picked: &Picked,
    opts: &RunOptions,
) -> Result<(Vec<RunSummary>, String), PretrainError> {
    let mut summaries = Vec::new();
    for kind in OptimizerKind::ALL {
        let run_config = config
            .clone()
            .with_optimizer(kind.name().to_string())
            .with_lr(rates.of(kind));
        let run_opts = RunOptions {
            out_dir: opts.out_dir.join(kind.dir_name()),
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
    let floor = corpus.plot_floor();
    write_text(
        &opts.out_dir.join("loss.svg"),
        &svg_plot(
            &format!(
                "held-out loss, llama {} on {}",
                config.size, picked.description
            ),
            &Axis::loss("held-out loss (nats/token)", config.steps as f64),
            &curves,
            floor,
        ),
    )?;
    Ok((summaries, table))
}

/// Header of `compare.csv`.
pub const COMPARE_CSV_HEADER: &str = "optimizer,lr,final_eval_loss,final_train_loss,wall_s,tokens_per_s,state_bytes,projected_state_bytes,dense_state_bytes,peak_memory_bytes,skipped_steps,mean_residual_fraction";

fn compare_csv(summaries: &[RunSummary]) -> String {
    let mut s = format!("{COMPARE_CSV_HEADER}\n");
    for r in summaries {
        s.push_str(&format!(
            "{},{:e},{:.6},{:.6},{:.3},{:.1},{},{},{},{},{},{}\n",
            r.optimizer.name(),
            r.lr,
            r.final_eval_loss,
            r.final_train_loss,
            r.wall_s,
            r.tokens_per_s,
            r.state.total,
            r.state.projected,
            r.state.dense,
            r.peak_memory.map_or(String::new(), |m| m.to_string()),
            r.skipped_steps,
            r.mean_residual_fraction
                .map_or(String::new(), |m| format!("{m:.6}"))
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
        "\n| optimizer | peak lr | final eval loss | mean residual fraction | wall time (s) | tokens/s | optimizer state | peak memory ({memory_kind}) |\n|---|---|---|---|---|---|---|---|\n"
    ));
    for r in summaries {
        s.push_str(&format!(
            "| {} | {:e} | {:.4} | {} | {:.1} | {:.0} | {} | {} |\n",
            r.optimizer.label(),
            r.lr,
            r.final_eval_loss,
            r.mean_residual_fraction
                .map_or("—".into(), |m| format!("{m:.3}")),
            r.wall_s,
            r.tokens_per_s,
            human_bytes(r.state.total as u64),
            r.peak_memory.map_or("n/a".into(), human_bytes)
        ));
    }
    s.push_str(
        "\nMean residual fraction: ‖G − S·SᵀG‖²/‖G‖² before each subspace update, averaged over updates and projected matrices (subspace.csv in each run's folder).\n",
    );
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
                c[2].parse().map_err(|e| format!("{e} in `{l}`"))?,
                c[6].parse().map_err(|e| format!("{e} in `{l}`"))?,
            ))
        })
        .collect()
}
