//! The training loop's progress: on a terminal, a bar with the step, the latest loss and
//! the time remaining; elsewhere (a pipe, a log file, CI) one plain line per logged step.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where the progress goes.
pub enum Progress {
    /// Nothing is printed.
    Quiet,
    /// One line per logged step, for logs and pipes.
    Lines,
    /// A progress bar on the terminal; lines that must stay (evaluations) print above it.
    Bar(ProgressBar),
}

impl Progress {
    /// Progress of `total` steps from `start` on, for the optimizer `name`: a bar where
    /// stdout is a terminal, plain lines otherwise, nothing unless `verbose`.
    pub fn new(verbose: bool, name: &str, start: u64, total: u64) -> Self {
        if !verbose {
            return Progress::Quiet;
        }
        let target = ProgressDrawTarget::stdout();
        if target.is_hidden() {
            return Progress::Lines;
        }
        let style = ProgressStyle::with_template(
            "[{prefix}] {bar:28} {pos:>6}/{len} {msg}  {elapsed_precise} elapsed, ETA {eta_precise}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total), target)
            .with_style(style)
            .with_prefix(name.to_string())
            .with_position(start);
        bar.reset_eta();
        Progress::Bar(bar)
    }

    /// A logged step: `line` in full where lines are printed, `short` as the bar's message.
    /// `keep` lines (evaluations, the last step) stay above the bar.
    pub fn step(&self, done: u64, line: &str, short: &str, keep: bool) {
        match self {
            Progress::Quiet => {}
            Progress::Lines => println!("{line}"),
            Progress::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(short.to_string());
                if keep {
                    bar.println(line);
                }
            }
        }
    }

    /// A line that is not a step (the first evaluation).
    pub fn line(&self, line: &str) {
        match self {
            Progress::Quiet => {}
            Progress::Lines => println!("{line}"),
            Progress::Bar(bar) => bar.println(line),
        }
    }

    /// Run `f` (which writes to stderr, say) with the bar cleared, then redraw it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match self {
            Progress::Bar(bar) => bar.suspend(f),
            _ => f(),
        }
    }

    /// The run is over: leave the bar where it ended.
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.abandon();
        }
    }
}
