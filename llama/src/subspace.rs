//! The run's subspace diagnostics: `subspace.csv`, one row per projected matrix per
//! subspace update (from [`subtrack::SubTrackReport::take_subspace_diagnostics`]), and
//! `subspace.svg`, the residual fraction against the step, one line per matrix type.

use std::collections::BTreeMap;

use subtrack::SubspaceDiagnostics;

use super::model::LlamaConfig;
use super::report::Points;

/// Header of `subspace.csv`. `step` is the parameter's completed steps when the update ran;
/// σ and θ are empty for GaLore's SVD refresh, `limiter_scale` without recovery scaling.
pub const SUBSPACE_CSV_HEADER: &str =
    "step,matrix,rows,cols,sigma,theta,principal_angle,residual_fraction,limiter_scale";

/// The matrix types of the model's projected weights, by shape (each type has its own:
/// attention d×d, the MLP's gate and up d×f, its down projection f×d).
pub fn matrix_type(model: &LlamaConfig, [rows, cols]: [usize; 2]) -> &'static str {
    let (d, f) = (model.hidden_size, model.intermediate_size);
    match (rows, cols) {
        (r, c) if r == d && c == d => "attention",
        (r, c) if r == d && c == f => "mlp gate/up",
        (r, c) if r == f && c == d => "mlp down",
        _ => "other",
    }
}

/// CSV rows of `diagnostics` (no header).
pub fn csv_rows(diagnostics: &[SubspaceDiagnostics], model: &LlamaConfig) -> String {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6e}"));
    diagnostics
        .iter()
        .map(|d| {
            format!(
                "{},{},{},{},{},{},{:.6e},{:.6e},{}\n",
                d.step,
                matrix_type(model, d.shape),
                d.shape[0],
                d.shape[1],
                opt(d.sigma),
                opt(d.theta),
                d.principal_angle,
                d.residual_fraction,
                opt(d.limiter_scale)
            )
        })
        .collect()
}

/// The rows of an existing `subspace.csv` text whose update ran before completed step
/// `start` (those a checkpoint at `start` has seen), header included.
pub fn csv_prefix(text: &str, start: usize) -> String {
    let mut out = format!("{SUBSPACE_CSV_HEADER}\n");
    for line in text.lines().skip(1) {
        let step = line.split(',').next().and_then(|s| s.parse::<usize>().ok());
        if step.is_some_and(|s| s < start) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// (step, matrix type, residual fraction) of each row of a `subspace.csv` text.
fn residuals(text: &str) -> impl Iterator<Item = (f64, &str, f64)> {
    text.lines().skip(1).filter_map(|line| {
        let c: Vec<&str> = line.split(',').collect();
        Some((
            c.first()?.parse().ok()?,
            *c.get(1)?,
            c.get(7)?.parse().ok()?,
        ))
    })
}

/// The residual fraction against the step, one curve per matrix type: the mean over that
/// type's matrices at each update.
pub fn residual_curves(text: &str) -> Vec<(String, Points)> {
    let mut sums: BTreeMap<&str, BTreeMap<u64, (f64, usize)>> = BTreeMap::new();
    for (step, kind, residual) in residuals(text) {
        let entry = sums
            .entry(kind)
            .or_default()
            .entry(step as u64)
            .or_default();
        entry.0 += residual;
        entry.1 += 1;
    }
    sums.into_iter()
        .map(|(kind, steps)| {
            let points = steps
                .into_iter()
                .map(|(step, (sum, n))| (step as f64, sum / n as f64))
                .collect();
            (kind.to_string(), points)
        })
        .collect()
}

/// The mean residual fraction over every row of a `subspace.csv` text; `None` without rows.
pub fn mean_residual(text: &str) -> Option<f64> {
    let (sum, n) = residuals(text).fold((0.0, 0usize), |(s, n), (_, _, r)| (s + r, n + 1));
    (n > 0).then(|| sum / n as f64)
}
