//! The command line: options, defaults and their parsing.

use std::path::PathBuf;

use subtrack::SubTrackConfig;
use subtrack::kernels::{ColumnNorms, NormsChoice, ProjectionTile, TileChoice};
use subtrack_llama::OptimizerKind;

/// The parsed command line (see [`USAGE`]).
pub(crate) struct Args {
    pub(crate) full: bool,
    pub(crate) device: String,
    pub(crate) reps: usize,
    pub(crate) out: PathBuf,
    pub(crate) svd_max: usize,
    pub(crate) sections: Vec<u32>,
    pub(crate) wgsl_kernels: bool,
    pub(crate) cpu_kernels: bool,
    pub(crate) batch: usize,
    pub(crate) optimizers: Vec<OptimizerKind>,
    pub(crate) train_sizes: Option<Vec<String>>,
    pub(crate) projection_splits: usize,
    pub(crate) projection_tile: TileChoice,
    pub(crate) recovery_norms: NormsChoice,
}

/// `--help`: the options, one line each.
pub(crate) const USAGE: &str = "\
Usage: cargo run --release --example benchmark -- [OPTIONS]

Sections: 1 one subspace update, 2 the amortised optimizer step, 3 the training step,
4 the WGSL kernels against the portable path (wgpu only).

  --full                  LLaMA shapes, for GPUs (default: reduced sizes for a CPU)
  --device SPEC           where to run                                    [auto]
                          ({DEVICES})
  --reps N                timed repetitions per figure, after a warm-up   [5]
  --out DIR               where benchmark.md and benchmark.json go        [target/bench]
  --sections LIST         which sections, in the order given              [1,2,3,4]
  --optimizers LIST       sections 2 and 3: adamw,galore,subtrack-grad,subtrack++ [all]
  --train-sizes LIST      section 3's llama sizes            [tiny,9m; 20m,60m with --full]
  --svd-max M             skip GaLore's SVD where the short side exceeds M  [2048]
  --batch N               section 4: N back-to-back calls per device sync   [1]
  --no-wgsl-kernels       sections 2 and 3 on Burn's tensor ops on wgpu too
  --no-cpu-kernels        sections 2 and 3 on Burn's tensor ops on the CPU (flex) too
Kernel variants (the autotuner's choice by default; section 4 also times the tiles and
split counts beside it):
  --projection-splits N   pin the optimizer's projections to split-K, N partial sums
                          (1: the autotuner weighs split-K per shape) [1]
  --projection-tile T     its projections' and weight updates' blocks: 64 (64x64), 128
                          (128x128) or tuned (the autotuner's pick per shape) [tuned]
  --recovery-norms N      its recovery column norms: per-column, tiled (64x64 tiles) or
                          tuned (the autotuner's pick per shape) [tuned]
  -h, --help              this text
";

/// The command line, or `None` for `--help`.
pub(crate) fn parse() -> Result<Option<Args>, String> {
    let mut args = Args {
        full: false,
        device: "auto".into(),
        reps: 5,
        out: PathBuf::from("target/bench"),
        svd_max: 2048,
        sections: vec![1, 2, 3, 4],
        wgsl_kernels: SubTrackConfig::new().wgsl_kernels,
        cpu_kernels: SubTrackConfig::new().cpu_kernels,
        batch: 1,
        optimizers: OptimizerKind::ALL.to_vec(),
        train_sizes: None,
        projection_splits: 1,
        projection_tile: TileChoice::Tuned,
        recovery_norms: NormsChoice::Tuned,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--full" => args.full = true,
            "--wgsl-kernels" => args.wgsl_kernels = true,
            "--no-wgsl-kernels" => args.wgsl_kernels = false,
            "--no-cpu-kernels" => args.cpu_kernels = false,
            "--device" => args.device = value()?,
            "--reps" => {
                args.reps = value()?
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("--reps takes a positive integer")?
            }
            "--batch" => {
                args.batch = value()?
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("--batch takes a positive integer")?
            }
            "--optimizers" => {
                args.optimizers = value()?
                    .split(',')
                    .map(|x| OptimizerKind::parse(x.trim()).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--train-sizes" => {
                args.train_sizes = Some(value()?.split(',').map(|x| x.trim().into()).collect())
            }
            "--projection-splits" => {
                args.projection_splits = value()?
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("--projection-splits takes a positive integer")?
            }
            "--projection-tile" => {
                args.projection_tile = match value()?.as_str() {
                    "64" => ProjectionTile::Block64.into(),
                    "128" => ProjectionTile::Block128.into(),
                    "tuned" => TileChoice::Tuned,
                    _ => return Err("--projection-tile takes 64, 128 or tuned".into()),
                }
            }
            "--recovery-norms" => {
                args.recovery_norms = match value()?.as_str() {
                    "per-column" => ColumnNorms::PerColumn.into(),
                    "tiled" => ColumnNorms::Tiled.into(),
                    "tuned" => NormsChoice::Tuned,
                    _ => return Err("--recovery-norms takes per-column, tiled or tuned".into()),
                }
            }
            "--out" => args.out = PathBuf::from(value()?),
            "--svd-max" => {
                args.svd_max = value()?
                    .parse()
                    .map_err(|_| "--svd-max takes an integer".to_string())?
            }
            "--sections" => {
                let mut sections: Vec<u32> = Vec::new();
                for x in value()?.split(',') {
                    match x.trim().parse() {
                        Ok(n @ 1..=4) if !sections.contains(&n) => sections.push(n),
                        Ok(1..=4) => {}
                        _ => return Err(format!("--sections: bad `{x}` (1, 2, 3 or 4)")),
                    }
                }
                args.sections = sections;
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    Ok(Some(args))
}
