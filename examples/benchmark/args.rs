//! The command line: options, defaults and their parsing (clap).

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{ArgAction, Parser};
use subtrack::testing::kernels::{ColumnNorms, NormsChoice, ProjectionTile, TileChoice};
use subtrack_llama::OptimizerKind;
use subtrack_llama::device::DEVICE_HELP;
use subtrack_llama::model::PRESETS;

/// Time the optimizer: 1 one subspace update, 2 the amortised optimizer step, 3 the
/// training step, 4 the WGSL kernels against the portable path (wgpu only).
#[derive(Parser)]
#[command(name = "benchmark", version, max_term_width = 100)]
pub(crate) struct Args {
    /// LLaMA shapes, for GPUs [default: reduced sizes for a CPU].
    #[arg(long)]
    pub(crate) full: bool,
    /// Where to run.
    #[arg(long, value_name = "SPEC", default_value = "auto", long_help = DEVICE_HELP)]
    pub(crate) device: String,
    /// Timed repetitions per figure, after a warm-up.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = positive)]
    pub(crate) reps: usize,
    /// Where benchmark.md and benchmark.json go.
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    pub(crate) out: PathBuf,
    /// Which sections, in the order given.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1,2,3,4", value_parser = clap::value_parser!(u32).range(1..=4))]
    pub(crate) sections: Vec<u32>,
    /// Sections 2 and 3: the optimizers [default: all four].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = PossibleValuesParser::new(OptimizerKind::ALL.map(|k| k.name())))]
    optimizers: Vec<String>,
    /// Section 3's llama sizes [default: tiny,9m; 20m,60m with --full].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = PossibleValuesParser::new(PRESETS))]
    pub(crate) train_sizes: Option<Vec<String>>,
    /// Skip GaLore's SVD where the short side exceeds M.
    #[arg(long, value_name = "M", default_value_t = 2048)]
    pub(crate) svd_max: usize,
    /// Section 1: only the shapes whose short side is at most M [default: all].
    #[arg(long, value_name = "M")]
    pub(crate) update_max: Option<usize>,
    /// Section 4: N back-to-back calls per device sync.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive)]
    pub(crate) batch: usize,
    /// Sections 2 and 3 on Burn's tensor ops on wgpu too.
    #[arg(long = "no-wgsl-kernels", action = ArgAction::SetFalse)]
    pub(crate) wgsl_kernels: bool,
    /// Sections 2 and 3 on Burn's tensor ops on the CPU (flex) too.
    #[arg(long = "no-cpu-kernels", action = ArgAction::SetFalse)]
    pub(crate) cpu_kernels: bool,
    /// Pin the optimizer's projections to split-K with N partial sums (1: the autotuner
    /// weighs split-K per shape).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive, help_heading = "Kernel variants")]
    pub(crate) projection_splits: usize,
    /// The blocks of its projections and weight updates: 64 (64×64), 128 (128×128),
    /// matmul (Burn's own ops) or tuned (the autotuner's pick per shape).
    #[arg(long, value_name = "T", default_value = "tuned", value_parser = tile, help_heading = "Kernel variants")]
    pub(crate) projection_tile: TileChoice,
    /// Its recovery column norms: per-column, tiled (64×64 tiles) or tuned (the
    /// autotuner's pick per shape).
    #[arg(long, value_name = "N", default_value = "tuned", value_parser = norms, help_heading = "Kernel variants")]
    pub(crate) recovery_norms: NormsChoice,
}

impl Args {
    /// The optimizers of sections 2 and 3, in the order given (all four by default).
    pub(crate) fn optimizers(&self) -> Vec<OptimizerKind> {
        if self.optimizers.is_empty() {
            return OptimizerKind::ALL.to_vec();
        }
        self.optimizers
            .iter()
            .map(|name| OptimizerKind::parse(name).expect("clap checked the name"))
            .collect()
    }

    /// The sections, each once, in the order first given.
    pub(crate) fn sections(&self) -> Vec<u32> {
        let mut sections = Vec::new();
        for &s in &self.sections {
            if !sections.contains(&s) {
                sections.push(s);
            }
        }
        sections
    }
}

/// A positive integer.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("takes a positive integer".into()),
    }
}

/// `--projection-tile`.
fn tile(s: &str) -> Result<TileChoice, String> {
    match s {
        "64" => Ok(ProjectionTile::Block64.into()),
        "128" => Ok(ProjectionTile::Block128.into()),
        "tuned" => Ok(TileChoice::Tuned),
        "matmul" => Ok(TileChoice::Matmul),
        _ => Err("takes 64, 128, matmul or tuned".into()),
    }
}

/// `--recovery-norms`.
fn norms(s: &str) -> Result<NormsChoice, String> {
    match s {
        "per-column" => Ok(ColumnNorms::PerColumn.into()),
        "tiled" => Ok(ColumnNorms::Tiled.into()),
        "tuned" => Ok(NormsChoice::Tuned),
        _ => Err("takes per-column, tiled or tuned".into()),
    }
}
