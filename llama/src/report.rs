//! Run outputs: the CSV log, the loss-curve SVG and the comparison table.

use std::fmt::Write as _;
use std::path::Path;

use subtrack::checkpoint::write_atomic;

use super::PretrainError;

/// Header of the per-run CSV log.
pub const CSV_HEADER: &str = "step,tokens,train_loss,eval_loss,eval_perplexity,lr,grad_norm,tokens_per_s,elapsed_s,memory_bytes";

/// One CSV row; `eval_*` are empty on steps without an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    /// Steps completed.
    pub step: u64,
    /// Training tokens seen.
    pub tokens: u64,
    /// Training loss at this step (nats/token).
    pub train_loss: f64,
    /// Held-out loss (nats/token) if evaluated at this step.
    pub eval_loss: Option<f64>,
    /// Learning rate used at this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training throughput over the last logging interval.
    pub tokens_per_s: f64,
    /// Wall time since the run (or its resumption) started, seconds.
    pub elapsed_s: f64,
    /// Device memory in use (bytes), where readable.
    pub memory_bytes: Option<u64>,
}

impl LogRow {
    /// The row as CSV.
    pub fn to_csv(&self) -> String {
        // Non-finite values (no training loss before step 1) are left empty.
        let num = |v: f64, text: String| if v.is_finite() { text } else { String::new() };
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| num(v, format!("{v:.6}")));
        format!(
            "{},{},{},{},{},{:.6e},{},{:.1},{:.2},{}",
            self.step,
            self.tokens,
            num(self.train_loss, format!("{:.6}", self.train_loss)),
            opt(self.eval_loss),
            opt(self.eval_loss.map(f64::exp)),
            self.lr,
            num(self.grad_norm, format!("{:.4}", self.grad_norm)),
            self.tokens_per_s,
            self.elapsed_s,
            self.memory_bytes.map_or(String::new(), |m| m.to_string()),
        )
    }
}

/// Keep the rows of an existing CSV log up to `step` (for a resumed run) and return its
/// text, header included; a missing file gives just the header.
pub fn csv_prefix(path: &Path, step: u64) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines().skip(1) {
            let row_step = line.split(',').next().and_then(|s| s.parse::<u64>().ok());
            if row_step.is_some_and(|s| s <= step) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Points of a loss curve: (step, loss in nats/token).
pub type Points = Vec<(f64, f64)>;

/// Training-loss and held-out-loss points of a CSV log's text.
pub fn curves_from_csv(text: &str) -> (Points, Points) {
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let Ok(step) = cols[0].parse::<f64>() else {
            continue;
        };
        if let Some(Ok(l)) = cols.get(2).map(|c| c.parse::<f64>()) {
            train.push((step, l));
        }
        if let Some(Ok(l)) = cols.get(3).map(|c| c.parse::<f64>()) {
            eval.push((step, l));
        }
    }
    (train, eval)
}

/// A curve for the plot: label and (step, loss) points.
pub struct Curve<'a> {
    /// Legend text.
    pub label: &'a str,
    /// Points (x = step, y = loss in nats/token).
    pub points: Points,
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// Render curves as an SVG line plot with axes, ticks, a legend and an optional dashed
/// horizontal line (the loss floor).
pub fn svg_plot(title: &str, curves: &[Curve], floor: Option<(f64, &str)>) -> String {
    let (w, h) = (720.0, 440.0);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 50.0);
    let all = curves
        .iter()
        .flat_map(|c| c.points.iter())
        .filter(|p| p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if let Some((f, _)) = floor {
        y0 = y0.min(f);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    // Both axes span whole tick steps of 1, 2 or 5 × 10^k.
    let (x_ticks, x_step) = nice_ticks(x0, x1, 6);
    let (y_ticks, y_step) = nice_ticks(y0, y1, 5);
    (x0, x1) = (x_ticks[0], x_ticks[x_ticks.len() - 1]);
    (y0, y1) = (y_ticks[0], y_ticks[y_ticks.len() - 1]);
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let sy = |y: f64| top + (y1 - y) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    let (px0, px1, py0, py1) = (left, w - right, top, h - bottom);
    let _ = writeln!(
        s,
        r#"<rect x="{px0}" y="{py0}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        px1 - px0,
        py1 - py0
    );
    let (x_decimals, y_decimals) = (decimals(x_step), decimals(y_step));
    for &fx in &x_ticks {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{py0}" x2="{0:.1}" y2="{py1}" stroke="#ddd"/><text x="{0:.1}" y="{1}" text-anchor="middle">{2:.3$}</text>"##,
            sx(fx),
            py1 + 16.0,
            fx,
            x_decimals
        );
    }
    for &fy in &y_ticks {
        let _ = writeln!(
            s,
            r##"<line x1="{px0}" y1="{0:.1}" x2="{px1}" y2="{0:.1}" stroke="#ddd"/><text x="{1}" y="{2:.1}" text-anchor="end">{3:.4$}</text>"##,
            sy(fy),
            px0 - 6.0,
            sy(fy) + 4.0,
            fy,
            y_decimals
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        (px0 + px1) / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">loss (nats/token)</text>"#,
        (py0 + py1) / 2.0,
        (py0 + py1) / 2.0
    );
    if let Some((f, label)) = floor {
        let _ = writeln!(
            s,
            r##"<line x1="{px0}" y1="{0:.1}" x2="{px1}" y2="{0:.1}" stroke="#555" stroke-dasharray="6 4"/><text x="{1}" y="{2:.1}" text-anchor="end" fill="#555">{3}</text>"##,
            sy(f),
            px1 - 4.0,
            sy(f) + 15.0,
            escape(label)
        );
    }
    for (i, c) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = c
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = py0 + 16.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            px1 - 150.0,
            px1 - 130.0,
            px1 - 124.0,
            ly + 4.0,
            escape(c.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Ticks at whole multiples of a round step (1, 2 or 5 × 10^k) that cover [lo, hi] with
/// about `target` intervals: the first tick at or below `lo`, the last at or above `hi`.
/// Returns the ticks and the step. A degenerate range is widened to one step around it.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let raw = span / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step + 1e-9).floor() as i64;
    let mut last = (hi / step - 1e-9).ceil() as i64;
    if last <= first {
        last = first + 1;
    }
    // k·step, rounded to the step's decimals so that 0.1·3 prints as 0.3.
    let scale = 10f64.powi(decimals(step) as i32);
    let ticks = (first..=last)
        .map(|k| (k as f64 * step * scale).round() / scale)
        .collect();
    (ticks, step)
}

/// Decimals that print every multiple of `step` exactly (0 for steps of 1 or more).
fn decimals(step: f64) -> usize {
    (-step.log10().floor()).max(0.0) as usize
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Write text to `path` atomically, mapping errors to [`PretrainError::Io`].
pub fn write_text(path: &Path, text: &str) -> Result<(), PretrainError> {
    write_atomic(path, text.as_bytes()).map_err(|e| PretrainError::Io(e.to_string()))
}

/// `1234567` → `"1.23 MB"` (decimal units).
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}
