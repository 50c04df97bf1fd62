//! Train the toy LLaMA with SubTrack++ under Burn's own `Learner`, on one device or on
//! several through Burn's `MultiDevice` strategies: no training loop of ours.
//!
//! ```sh
//! cargo run --release --example learner_llama -- --devices cpu
//! cargo run --release --example learner_llama -- --devices cpu,wgpu --strategy sharded
//! ```
//!
//! # Learning rates on several devices
//!
//! Burn's `MultiDevice` strategies (and its DDP) *sum* the devices' gradients; they do not
//! average them. With n devices, each taking `--batch-size` sequences, a step's gradient is
//! n times the mean gradient of the global batch of n·batch sequences. What that factor
//! changes:
//! - Adam's update M/(√V + ε), in the subspace and on dense parameters, is unchanged by it
//!   (ε aside), so the learning rate needs no 1/n. Choose it for the global batch as for
//!   AdamW (the same rate, or a larger one for the larger batch).
//! - SubTrack's geodesic step turns the basis by θ = η·σ, and σ grows with the gradient:
//!   this program divides `step_size` η by n, so the basis turns as it would on one device.
//! - Gradient clipping by norm would need its threshold times n (this program does not clip).
//! - Recovery scaling's Λ = (G − S·G̃)⊙φ, φ = ‖N‖/‖G̃‖, and its limiter are unchanged by it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::module::{Module, ParamGroup};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Int, Tensor};
use burn::train::metric::LossMetric;
use burn::train::{
    ClassificationOutput, ExecutionStrategy, InferenceStep, Learner, MultiDeviceOptim,
    SupervisedTraining, TrainOutput, TrainStep,
};
use clap::{Parser, ValueEnum};
use subtrack::{SubTrackConfig, sharded_state_bytes, state_bytes};
use subtrack_llama::device::{DEVICE_HELP, pick};
use subtrack_llama::model::PRESETS;
use subtrack_llama::report::human_bytes;
use subtrack_llama::{Corpus, Llama, OptimizerKind, PretrainError, TrainConfig};

/// The model as the `Learner` trains it: the job's LLaMA, its parameters under `llama.`.
#[derive(Module, Debug)]
struct LanguageModel {
    llama: Llama,
}

/// The attention and MLP weights, the matrices SubTrack++ projects (the job's
/// `PROJECTED_PARAMS` under the `llama.` prefix); the rest gets AdamW.
const PROJECTED: &str = r"^llama\.layers\.\d+\.(attention|mlp)\..*weight$";

/// Next-token windows: inputs and targets, each [batch, seq].
#[derive(Clone, Debug)]
struct Windows {
    inputs: Tensor<2, Int>,
    targets: Tensor<2, Int>,
}

/// A loader of [`Windows`] batches.
type Loader = Arc<dyn DataLoader<Windows>>;

/// Builds [`Windows`] from window start positions in one of the corpus's streams.
#[derive(Clone)]
struct WindowBatcher {
    tokens: Arc<Vec<u32>>,
    seq_len: usize,
}

impl Batcher<usize, Windows> for WindowBatcher {
    fn batch(&self, starts: Vec<usize>, device: &Device) -> Windows {
        let n = starts.len();
        let window = |offset: usize| -> Vec<i64> {
            starts
                .iter()
                .flat_map(|&s| self.tokens[s + offset..s + offset + self.seq_len].iter())
                .map(|&t| t as i64)
                .collect()
        };
        let tensor = |values: Vec<i64>| {
            Tensor::from_data(
                burn::tensor::TensorData::new(values, [n, self.seq_len]),
                device,
            )
        };
        Windows {
            inputs: tensor(window(0)),
            targets: tensor(window(1)),
        }
    }
}

impl LanguageModel {
    /// Cross-entropy of every position, as the `Learner`'s classification output.
    fn output(&self, batch: Windows) -> ClassificationOutput {
        let logits = self.llama.forward(batch.inputs);
        let [b, t, v] = logits.dims();
        let logits = logits.reshape([b * t, v]);
        let targets = batch.targets.reshape([b * t]);
        let log_probs = burn::tensor::activation::log_softmax(logits.clone(), 1);
        let loss = log_probs
            .gather(1, targets.clone().unsqueeze_dim(1))
            .mean()
            .neg();
        ClassificationOutput::new(loss, logits, targets)
    }
}

impl TrainStep for LanguageModel {
    type Input = Windows;
    type Output = ClassificationOutput;
    fn step(&self, batch: Windows) -> TrainOutput<ClassificationOutput> {
        let output = self.output(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for LanguageModel {
    type Input = Windows;
    type Output = ClassificationOutput;
    fn step(&self, batch: Windows) -> ClassificationOutput {
        self.output(batch)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Strategy {
    /// One device (the first of --devices).
    Single,
    /// Burn's `MultiDevice` with `OptimMainDevice`: the gradients are summed on the first
    /// device and the optimizer steps there.
    MainDevice,
    /// Burn's `MultiDevice` with `OptimSharded`: each parameter is summed and stepped on a
    /// device of its own, so the optimizer state is spread over the devices.
    Sharded,
}

/// Train the toy LLaMA with SubTrack++ under Burn's `Learner` on one or several devices.
#[derive(Parser)]
#[command(name = "learner_llama", max_term_width = 100)]
struct Cli {
    /// Comma-separated devices, each as pretrain_llama's --device takes it (a device may
    /// repeat: cpu,cpu runs two workers on the CPU).
    #[arg(long, value_delimiter = ',', default_value = "cpu", long_help = DEVICE_HELP)]
    devices: Vec<String>,
    /// How the devices share the work.
    #[arg(long, value_enum, default_value_t = Strategy::MainDevice)]
    strategy: Strategy,
    /// Model size preset.
    #[arg(long, default_value = "tiny", value_parser = clap::builder::PossibleValuesParser::new(PRESETS))]
    size: String,
    /// A UTF-8 text file to train on (byte-level) instead of the synthetic corpus.
    #[arg(long, value_name = "FILE")]
    data: Option<String>,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Training windows per epoch (over all devices).
    #[arg(long, default_value_t = 512)]
    windows: usize,
    /// Sequences per batch on each device.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Peak learning rate (cosine to zero over the run) [default: the job's SubTrack++ rate].
    #[arg(long, default_value_t = OptimizerKind::SubTrackPlusPlus.default_lr())]
    lr: f64,
    /// Output directory (the Learner's checkpoints and logs).
    #[arg(long, default_value = "runs/learner")]
    out: PathBuf,
}

fn run(cli: Cli) -> Result<(), PretrainError> {
    let picked = cli
        .devices
        .iter()
        .map(|spec| pick(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let devices: Vec<Device> = match cli.strategy {
        Strategy::Single => vec![picked[0].device.clone().autodiff()],
        _ => picked.iter().map(|p| p.device.clone().autodiff()).collect(),
    };
    let n = devices.len();
    for (i, p) in picked.iter().enumerate().take(n) {
        println!("device {i}: {}", p.description);
    }
    let train_config = TrainConfig::new()
        .with_size(cli.size.clone())
        .with_seq_len(cli.seq_len)
        .with_data(cli.data.clone());
    let corpus: Corpus = train_config.corpus()?;
    let model_config = train_config.model(corpus.vocab)?;
    let model = LanguageModel {
        llama: model_config.init_seeded(&devices[0], 42)?,
    };

    // SubTrack++ on the attention and MLP weights, AdamW on the rest; the geodesic step
    // size divided by the number of devices whose gradients are summed (see above).
    let config = SubTrackConfig::subtrack_plus_plus()
        .with_rank(model_config.default_rank())
        .with_update_interval(50);
    let config = config.clone().with_step_size(config.step_size / n as f64);
    let optim = optimizer(&config)?;
    let (train, valid) = loaders(&cli, &corpus);

    let steps = cli.epochs * cli.windows.div_ceil(cli.batch_size * n);
    let scheduler = CosineAnnealingLrSchedulerConfig::new(cli.lr, steps.max(1))
        .init()
        .map_err(|e| PretrainError::InvalidArgument(e.to_string()))?;
    let strategy = match cli.strategy {
        Strategy::Single => ExecutionStrategy::single(devices[0].clone()),
        Strategy::MainDevice => {
            ExecutionStrategy::multi(devices.clone(), MultiDeviceOptim::OptimMainDevice)
        }
        Strategy::Sharded => {
            ExecutionStrategy::multi(devices.clone(), MultiDeviceOptim::OptimSharded)
        }
    };
    println!(
        "llama {} ({:.2} M parameters), SubTrack++ rank {}, step size {} (η / {n}), lr {}, {:?} on {n} device(s)",
        cli.size,
        model_config.num_params() as f64 / 1e6,
        config.rank,
        config.step_size,
        cli.lr,
        cli.strategy
    );
    let training = SupervisedTraining::new(&cli.out, train, valid)
        .num_epochs(cli.epochs)
        .with_default_checkpointers()
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .with_training_strategy(strategy.into())
        .summary();
    let result = training.launch(Learner::new(model, optim, scheduler));
    let _ = result.model;
    print_state(&cli, &config, n)
}

/// SubTrack++ (`config`) on the attention and MLP weights, AdamW on the rest.
fn optimizer(config: &SubTrackConfig) -> Result<ModuleOptimizer, PretrainError> {
    let invalid = |e: subtrack::SubTrackError| PretrainError::InvalidArgument(e.to_string());
    let projected = ParamGroup::from_regex(PROJECTED).expect("a valid pattern");
    Ok(
        ModuleOptimizer::from(config.adamw().map_err(invalid)?).with_group(
            projected,
            config.build().map_err(invalid)?,
            None,
        ),
    )
}

/// The training loader (`cli.windows` windows at seeded random starts) and the held-out
/// one (up to 64 windows side by side), batched as `cli` says.
fn loaders(cli: &Cli, corpus: &Corpus) -> (Loader, Loader) {
    let mut rng = subtrack::testing::rng::SplitMix::new(7);
    let span = corpus.train.len() - cli.seq_len - 1;
    let starts: Vec<usize> = (0..cli.windows).map(|_| rng.below(span)).collect();
    let valid_starts: Vec<usize> = (0..(corpus.valid.len() - 1) / cli.seq_len)
        .take(64)
        .map(|i| i * cli.seq_len)
        .collect();
    let loader = |tokens: &[u32], starts: Vec<usize>| {
        DataLoaderBuilder::new(WindowBatcher {
            tokens: Arc::new(tokens.to_vec()),
            seq_len: cli.seq_len,
        })
        .batch_size(cli.batch_size)
        .build(InMemDataset::new(starts))
    };
    (
        loader(&corpus.train, starts),
        loader(&corpus.valid, valid_starts),
    )
}

/// The optimizer state each of the `n` devices held: read from the Learner's last
/// optimizer checkpoint, split as OptimSharded places it (all on the first device
/// otherwise).
fn print_state(cli: &Cli, config: &SubTrackConfig, n: usize) -> Result<(), PretrainError> {
    let record = cli
        .out
        .join("checkpoint")
        .join(format!("optim-{}.bpk", cli.epochs));
    let saved = optimizer(config)?
        .load(&record)
        .map_err(|e| PretrainError::Checkpoint(format!("{}: {e}", record.display())))?;
    let whole = state_bytes(&saved).map_err(|e| PretrainError::Io(e.to_string()))?;
    println!("optimizer state: {}", human_bytes(whole.total as u64));
    if cli.strategy == Strategy::Sharded {
        let shares =
            sharded_state_bytes(&saved, n).map_err(|e| PretrainError::Io(e.to_string()))?;
        for (i, share) in shares.iter().enumerate() {
            println!(
                "  device {i}: {} ({} projected, {} dense)",
                human_bytes(share.total as u64),
                human_bytes(share.projected as u64),
                human_bytes(share.dense as u64)
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
