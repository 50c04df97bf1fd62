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

/// A curve for the plot: label and (step, value) points.
pub struct Curve<'a> {
    /// Legend text.
    pub label: &'a str,
    /// Points (x = step, y in the plot's unit).
    pub points: Points,
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// The unit of a plot's y axis and the part of the run its range covers.
pub struct Axis<'a> {
    /// What the y axis plots, with its unit, e.g. "held-out loss (nats/token)".
    pub label: &'a str,
    /// The y range fits the points from this step on (the part of a run a person studies:
    /// past the first steps' fall from the random model's loss); earlier points outside it
    /// are clipped at the frame, and the plot says so. 0 fits every point.
    pub fit_from: f64,
}

impl Axis<'_> {
    /// A loss axis fitted from a tenth of the run (`steps`) on.
    pub fn loss(label: &str, steps: f64) -> Axis<'_> {
        Axis {
            label,
            fit_from: steps / 10.0,
        }
    }
}

/// The plot's frame: SVG size, margins, and the data ranges its ticks span.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn sx(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * (self.w - self.left - self.right)
    }

    fn sy(&self, y: f64) -> f64 {
        self.top + (self.y.1 - y) / (self.y.1 - self.y.0) * (self.h - self.top - self.bottom)
    }

    /// The plot area: (x0, x1, y0, y1) in SVG units.
    fn area(&self) -> (f64, f64, f64, f64) {
        (
            self.left,
            self.w - self.right,
            self.top,
            self.h - self.bottom,
        )
    }
}

/// Render curves as an SVG line plot: a title, the x axis in steps, the y axis as `axis`
/// says, ticks at round values, a legend and an optional dashed horizontal line (the loss
/// floor) labelled above itself.
pub fn svg_plot(title: &str, axis: &Axis, curves: &[Curve], floor: Option<(f64, &str)>) -> String {
    let points = || {
        curves
            .iter()
            .flat_map(|c| c.points.iter())
            .filter(|p| p.1.is_finite())
    };
    let (x0, x1) = min_max(points().map(|p| p.0));
    // Fitted from `fit_from` on, or to every point where none lies there.
    let fit_from = if points().any(|p| p.0 >= axis.fit_from) {
        axis.fit_from
    } else {
        f64::MIN
    };
    let fitted = points().filter(|p| p.0 >= fit_from).map(|p| p.1);
    let (mut y0, mut y1) = min_max(fitted.chain(floor.map(|f| f.0)));
    if y0 > y1 {
        (y0, y1) = (0.0, 1.0);
    }
    let clipped = points().any(|p| p.1 < y0 || p.1 > y1);
    let (x0, x1) = if x0 > x1 { (0.0, 1.0) } else { (x0, x1) };
    // Both axes span whole tick steps of 1, 2 or 5 × 10^k.
    let (x_ticks, x_step) = nice_ticks(x0, x1, 6);
    let (y_ticks, y_step) = nice_ticks(y0, y1, 5);
    let frame = Frame {
        w: 720.0,
        h: 440.0,
        left: 70.0,
        right: 20.0,
        top: 40.0,
        bottom: 50.0,
        x: (x_ticks[0], x_ticks[x_ticks.len() - 1]),
        y: (y_ticks[0], y_ticks[y_ticks.len() - 1]),
    };
    let mut s = String::new();
    head(&mut s, &frame, title);
    ticks(
        &mut s,
        &frame,
        (&x_ticks, decimals(x_step)),
        (&y_ticks, decimals(y_step)),
    );
    labels(&mut s, &frame, axis, clipped);
    if let Some((f, label)) = floor {
        let (px0, px1, ..) = frame.area();
        let _ = writeln!(
            s,
            r##"<line x1="{px0}" y1="{0:.1}" x2="{px1}" y2="{0:.1}" stroke="#555" stroke-dasharray="6 4"/><text x="{1}" y="{2:.1}" text-anchor="end" fill="#555">{3}</text>"##,
            frame.sy(f),
            px1 - 4.0,
            frame.sy(f) - 5.0,
            escape(label)
        );
    }
    lines(&mut s, &frame, curves);
    s.push_str("</svg>\n");
    s
}

/// (min, max) of `values`; (MAX, MIN) where there are none.
fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The SVG's opening, background, title, frame and the clip path of the plot area.
fn head(s: &mut String, frame: &Frame, title: &str) {
    let (w, h) = (frame.w, frame.h);
    let (px0, px1, py0, py1) = frame.area();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<defs><clipPath id="area"><rect x="{px0}" y="{py0}" width="{}" height="{}"/></clipPath></defs>"#,
        px1 - px0,
        py1 - py0
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r#"<rect x="{px0}" y="{py0}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        px1 - px0,
        py1 - py0
    );
}

/// Grid lines and tick labels, each axis's ticks with the decimals its step needs.
fn ticks(s: &mut String, frame: &Frame, (x, x_dec): (&[f64], usize), (y, y_dec): (&[f64], usize)) {
    let (px0, px1, py0, py1) = frame.area();
    for &fx in x {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{py0}" x2="{0:.1}" y2="{py1}" stroke="#ddd"/><text x="{0:.1}" y="{1}" text-anchor="middle">{2:.3$}</text>"##,
            frame.sx(fx),
            py1 + 16.0,
            fx,
            x_dec
        );
    }
    for &fy in y {
        let _ = writeln!(
            s,
            r##"<line x1="{px0}" y1="{0:.1}" x2="{px1}" y2="{0:.1}" stroke="#ddd"/><text x="{1}" y="{2:.1}" text-anchor="end">{3:.4$}</text>"##,
            frame.sy(fy),
            px0 - 6.0,
            frame.sy(fy) + 4.0,
            fy,
            y_dec
        );
    }
}

/// The axes' names; with `clipped`, a note that earlier points lie outside the y range.
fn labels(s: &mut String, frame: &Frame, axis: &Axis, clipped: bool) {
    let (px0, px1, py0, py1) = frame.area();
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        (px0 + px1) / 2.0,
        frame.h - 12.0
    );
    let mid = (py0 + py1) / 2.0;
    let _ = writeln!(
        s,
        r#"<text x="16" y="{mid}" text-anchor="middle" transform="rotate(-90 16 {mid})">{}</text>"#,
        escape(axis.label)
    );
    if clipped {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="start" fill="#555">y axis fitted to the points from step {} on; earlier ones run outside it</text>"##,
            px0 + 6.0,
            py0 - 6.0,
            axis.fit_from.round()
        );
    }
}

/// The curves, clipped to the plot area, and their legend over them.
fn lines(s: &mut String, frame: &Frame, curves: &[Curve]) {
    let (_, px1, py0, _) = frame.area();
    for (i, c) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = c
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", frame.sx(x), frame.sy(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" clip-path="url(#area)" points="{}"/>"#,
            pts.join(" ")
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{}" y="{}" width="150" height="{}" fill="white" fill-opacity="0.85"/>"#,
        px1 - 156.0,
        py0 + 6.0,
        16.0 * curves.len() as f64 + 4.0
    );
    for (i, c) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
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
