//! A run's files in its output directory, each opened for a fresh run (empty, or the
//! header alone) or a resumed one (the lines up to the checkpoint's step), then appended to:
//!
//! - `log.csv`: one [`LogRow`] per logged step, and the loss curves drawn in `loss.svg`;
//! - `samples.txt` (text corpora): one line per evaluation, "step N", the prompt and the
//!   continuation, tab-separated and escaped;
//! - `subspace.csv` and `subspace.svg` (low-rank runs): the subspace diagnostics of each
//!   update, rewritten whenever new rows are taken.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use subtrack::SubspaceDiagnostics;

use super::PretrainError;
use super::model::LlamaConfig;
use super::report::{
    Axis, CSV_HEADER, Curve, LogRow, Points, csv_prefix, curves_from_csv, svg_plot, write_text,
};
use super::subspace::{self, SUBSPACE_CSV_HEADER};

/// An I/O error as a [`PretrainError`] that says what was being done.
pub(crate) fn io(what: &str, e: std::io::Error) -> PretrainError {
    PretrainError::Io(format!("{what}: {e}"))
}

/// How a run's files open: afresh, or keeping what a resumed run's checkpoint covers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Opening {
    /// A fresh run: every file starts empty (or with its header).
    Fresh,
    /// A run resumed from a checkpoint at this step: lines for later steps are dropped.
    Resumed(usize),
}

/// The CSV log and the loss curves it holds.
pub(crate) struct Log {
    file: File,
    svg: PathBuf,
    /// Training-loss points (step, loss), resumed parts included.
    pub train: Points,
    /// Held-out loss points (step, loss).
    pub eval: Points,
}

impl Log {
    /// Open `dir/log.csv` (and the plot `dir/loss.svg` it draws).
    pub fn open(dir: &Path, opening: Opening) -> Result<Self, PretrainError> {
        let path = dir.join("log.csv");
        let text = match opening {
            Opening::Fresh => format!("{CSV_HEADER}\n"),
            Opening::Resumed(step) => csv_prefix(&path, step as u64),
        };
        let (train, eval) = curves_from_csv(&text);
        write_text(&path, &text)?;
        let file = append(&path, "opening the CSV log")?;
        Ok(Log {
            file,
            svg: dir.join("loss.svg"),
            train,
            eval,
        })
    }

    /// Append `row`, and its losses to the curves.
    pub fn write(&mut self, row: &LogRow) -> Result<(), PretrainError> {
        writeln!(self.file, "{}", row.to_csv()).map_err(|e| io("writing the CSV log", e))?;
        if row.train_loss.is_finite() {
            self.train.push((row.step as f64, row.train_loss));
        }
        if let Some(l) = row.eval_loss {
            self.eval.push((row.step as f64, l));
        }
        Ok(())
    }

    /// Draw both curves of a run of `steps` in `loss.svg`, with the corpus's `floor`.
    pub fn plot(
        &self,
        title: &str,
        steps: usize,
        floor: Option<(f64, &str)>,
    ) -> Result<(), PretrainError> {
        let curves = [
            Curve {
                label: "train",
                points: self.train.clone(),
            },
            Curve {
                label: "eval",
                points: self.eval.clone(),
            },
        ];
        let axis = Axis::loss("loss (nats/token)", steps as f64);
        write_text(&self.svg, &svg_plot(title, &axis, &curves, floor))
    }
}

/// `samples.txt`: what the model writes at each evaluation.
pub(crate) struct Samples {
    file: File,
}

impl Samples {
    /// Open `dir/samples.txt`.
    pub fn open(dir: &Path, opening: Opening) -> Result<Self, PretrainError> {
        let path = dir.join("samples.txt");
        let kept = match opening {
            Opening::Fresh => String::new(),
            Opening::Resumed(step) => samples_prefix(&path, step),
        };
        write_text(&path, &kept)?;
        Ok(Samples {
            file: append(&path, "opening the samples")?,
        })
    }

    /// Append the sample of step `step`: its escaped prompt and continuation.
    pub fn write(&mut self, step: usize, prompt: &str, text: &str) -> Result<(), PretrainError> {
        writeln!(self.file, "step {step}\t{prompt}\t{text}")
            .map_err(|e| io("writing the samples", e))
    }
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

/// `subspace.csv` and `subspace.svg`: the text of the CSV, kept to redraw the plot.
pub(crate) struct SubspaceLog {
    csv: PathBuf,
    svg: PathBuf,
    text: String,
}

impl SubspaceLog {
    /// Open `dir/subspace.csv` (and the plot `dir/subspace.svg`).
    pub fn open(dir: &Path, opening: Opening) -> Result<Self, PretrainError> {
        let csv = dir.join("subspace.csv");
        let text = match opening {
            Opening::Fresh => format!("{SUBSPACE_CSV_HEADER}\n"),
            Opening::Resumed(step) => {
                subspace::csv_prefix(&std::fs::read_to_string(&csv).unwrap_or_default(), step)
            }
        };
        write_text(&csv, &text)?;
        Ok(SubspaceLog {
            csv,
            svg: dir.join("subspace.svg"),
            text,
        })
    }

    /// Append the rows of `taken` (not empty), rewrite both files (the plot titled with
    /// `title`), and return the latest residual fraction of each matrix type, for the log.
    pub fn write(
        &mut self,
        taken: &[SubspaceDiagnostics],
        model: &LlamaConfig,
        title: &str,
    ) -> Result<Vec<(String, f64)>, PretrainError> {
        let rows = subspace::csv_rows(taken, model);
        let latest = subspace::residual_curves(&format!("{SUBSPACE_CSV_HEADER}\n{rows}"))
            .into_iter()
            .map(|(matrix, points)| (matrix, points[points.len() - 1].1))
            .collect();
        self.text.push_str(&rows);
        write_text(&self.csv, &self.text)?;
        let curves = subspace::residual_curves(&self.text);
        let curves: Vec<Curve> = curves
            .iter()
            .map(|(label, points)| Curve {
                label,
                points: points.clone(),
            })
            .collect();
        let axis = Axis {
            label: "residual fraction (outside the basis)",
            fit_from: 0.0,
        };
        write_text(&self.svg, &svg_plot(title, &axis, &curves, None))?;
        Ok(latest)
    }

    /// The mean residual fraction over every row ([`subspace::mean_residual`]).
    pub fn mean_residual(&self) -> Option<f64> {
        subspace::mean_residual(&self.text)
    }
}

/// `path` opened for appending.
fn append(path: &Path, what: &str) -> Result<File, PretrainError> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| io(what, e))
}
