//! Pre-train a toy LLaMA with SubTrack++ (or AdamW, GaLore, SubTrack-Grad; or all four with
//! `--compare`) on an embedded synthetic corpus or your own text. Nothing is downloaded.
//!
//! `cargo run --release --example pretrain_llama -- --help`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use subtrack_llama::alloc::CountingAlloc;
use subtrack_llama::config::default_out_dir;
use subtrack_llama::device::{DEVICE_HELP, Picked, pick};
use subtrack_llama::generate::{Sampling, printable};
use subtrack_llama::model::PRESETS;
use subtrack_llama::panics::exit_on_background_panic;
use subtrack_llama::report::human_bytes;
use subtrack_llama::sweep::DEFAULT_FACTORS;
use subtrack_llama::{
    Corpus, LlamaConfig, PretrainError, RunOptions, RunSummary, TrainConfig, compare, sweep, train,
};
use subtrack_llama::{LearningRates, OptimizerKind};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The defaults of every option: the library's [`TrainConfig`].
fn defaults() -> TrainConfig {
    TrainConfig::new()
}

/// Pre-train a small LLaMA with AdamW, GaLore, SubTrack-Grad or SubTrack++ on an embedded
/// synthetic corpus (nothing is downloaded) or your own text.
#[derive(Parser)]
#[command(name = "pretrain_llama", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The optimizer.
    #[arg(long, default_value_t = defaults().optimizer, value_parser = PossibleValuesParser::new(OptimizerKind::ALL.map(|k| k.name())))]
    optimizer: String,
    /// Run all four optimizers on the same data and seed, each at its own learning rate;
    /// print a table.
    #[arg(long)]
    compare: bool,
    /// The model: GaLore's llama shapes, or `tiny` (width 64, for tests).
    #[arg(long, default_value_t = defaults().size, value_parser = PossibleValuesParser::new(PRESETS))]
    size: String,
    /// Where to run.
    #[arg(long, value_name = "SPEC", default_value = "auto", long_help = DEVICE_HELP)]
    device: String,
    /// Train on a UTF-8 text file (byte tokens) instead of the synthetic corpus.
    #[arg(long, value_name = "FILE")]
    data: Option<String>,
    /// Optimizer steps.
    #[arg(long, value_name = "N", default_value_t = defaults().steps)]
    steps: usize,
    /// Sequences per batch.
    #[arg(long, value_name = "N", default_value_t = defaults().batch_size)]
    batch_size: usize,
    /// Tokens per sequence.
    #[arg(long, value_name = "N", default_value_t = defaults().seq_len)]
    seq_len: usize,
    /// Peak learning rate [default: the optimizer's own: AdamW 2e-3, GaLore, SubTrack-Grad
    /// and SubTrack++ 3.2e-2, from a recorded sweep]. With --compare or --sweep, every
    /// optimizer's.
    #[arg(long, value_name = "X")]
    lr: Option<f64>,
    /// AdamW's peak learning rate (over --lr).
    #[arg(long, value_name = "X")]
    lr_dense: Option<f64>,
    /// GaLore's, SubTrack-Grad's and SubTrack++'s peak learning rate (over --lr).
    #[arg(long, value_name = "X")]
    lr_low_rank: Option<f64>,
    /// A short learning-rate sweep: the optimizer (all four with --compare) at its rate
    /// times each of --sweep-factors, with every other setting as given (lower --steps for
    /// a short one); prints each one's best rate and loss.
    #[arg(long)]
    sweep: bool,
    /// The factors the rates are multiplied by in --sweep.
    #[arg(long, value_name = "X,…", value_delimiter = ',', default_values_t = DEFAULT_FACTORS)]
    sweep_factors: Vec<f64>,
    /// Steps of linear warmup.
    #[arg(long, value_name = "N", default_value_t = defaults().warmup_steps)]
    warmup_steps: usize,
    /// Final learning rate over the peak (cosine decay).
    #[arg(long, value_name = "X", default_value_t = defaults().min_lr_ratio)]
    min_lr_ratio: f64,
    /// Global gradient-norm bound.
    #[arg(long, value_name = "X", default_value_t = defaults().grad_clip)]
    grad_clip: f64,
    /// Decoupled weight decay.
    #[arg(long, value_name = "X", default_value_t = defaults().weight_decay)]
    weight_decay: f64,
    /// Projection rank [default: GaLore's for the size; 32 at 9m].
    #[arg(long, value_name = "N")]
    rank: Option<usize>,
    /// Subspace update interval T.
    #[arg(long, value_name = "N", default_value_t = defaults().update_interval)]
    update_interval: usize,
    /// Held-out evaluation interval.
    #[arg(long, value_name = "N", default_value_t = defaults().eval_every)]
    eval_every: usize,
    /// Batches per evaluation.
    #[arg(long, value_name = "N", default_value_t = defaults().eval_batches)]
    eval_batches: usize,
    /// Checkpoint interval.
    #[arg(long, value_name = "N", default_value_t = defaults().checkpoint_every)]
    checkpoint_every: usize,
    /// Progress and CSV interval.
    #[arg(long, value_name = "N", default_value_t = defaults().log_every)]
    log_every: usize,
    /// Seed of the model, the corpus and the batches.
    #[arg(long, value_name = "N", default_value_t = defaults().seed)]
    seed: u64,
    /// Size of the synthetic corpus in tokens.
    #[arg(long, value_name = "N", default_value_t = defaults().synthetic_tokens)]
    synthetic_tokens: usize,
    /// Held-out fraction of the corpus.
    #[arg(long, value_name = "X", default_value_t = defaults().valid_fraction)]
    valid_fraction: f64,
    /// Output directory [default: runs/<optimizer>, runs/compare or runs/sweep].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue from DIR/checkpoint.bin.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Start over even if DIR holds a checkpoint.
    #[arg(long)]
    overwrite: bool,
    /// Burn's tensor ops instead of the WGSL kernels on wgpu.
    #[arg(long = "no-wgsl-kernels", action = ArgAction::SetFalse)]
    wgsl_kernels: bool,
    /// Burn's tensor ops instead of the fused loops on the CPU (flex).
    #[arg(long = "no-cpu-kernels", action = ArgAction::SetFalse)]
    cpu_kernels: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Continue a prompt with the model of a run trained on text (--data).
    Generate(GenerateArgs),
}

/// `pretrain_llama generate --out DIR`: the run's checkpoint continues a prompt.
#[derive(Args)]
struct GenerateArgs {
    /// The run's folder, holding its checkpoint.bin.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The text to continue [default: read from stdin].
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Bytes to generate.
    #[arg(long, value_name = "N", default_value_t = 200)]
    length: usize,
    /// Softmax temperature (> 0; small values approach the likeliest byte).
    #[arg(long, value_name = "X", default_value_t = 0.8)]
    temperature: f64,
    /// Draw among the K likeliest bytes only [default: all].
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Seed of the draws: the same seed, checkpoint and prompt give the same text.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Where to run.
    #[arg(long, value_name = "SPEC", default_value = "cpu", long_help = DEVICE_HELP)]
    device: String,
}

/// `generate`: the continuation on stdout, newlines and tabs as they are and other control
/// characters escaped.
fn generate(args: GenerateArgs) -> Result<(), PretrainError> {
    let prompt = match args.prompt {
        Some(text) => text.into_bytes(),
        None => {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
                .map_err(|e| PretrainError::Io(format!("reading the prompt from stdin: {e}")))?;
            text
        }
    };
    let sampling = Sampling {
        length: args.length,
        temperature: args.temperature,
        top_k: args.top_k,
        seed: args.seed,
    };
    sampling.validate()?;
    let picked = pick(&args.device)?;
    let text = subtrack_llama::generate::generate(&args.out, &prompt, &sampling, &picked.device)?;
    println!("{}{}", printable(&prompt), printable(&text));
    Ok(())
}

impl Cli {
    /// The optimizer named (the default where the name is unknown: `validate` says so).
    fn kind(&self) -> OptimizerKind {
        OptimizerKind::parse(&self.optimizer).unwrap_or(OptimizerKind::SubTrackPlusPlus)
    }

    /// Each optimizer's peak learning rate: --lr-dense or --lr-low-rank, else --lr, else
    /// its own default.
    fn rates(&self) -> LearningRates {
        LearningRates {
            dense: self.lr_dense.or(self.lr),
            low_rank: self.lr_low_rank.or(self.lr),
        }
    }

    /// The run's config: the library's defaults with every option applied.
    fn config(&self) -> TrainConfig {
        defaults()
            .with_optimizer(self.optimizer.clone())
            .with_size(self.size.clone())
            .with_data(self.data.clone())
            .with_steps(self.steps)
            .with_batch_size(self.batch_size)
            .with_seq_len(self.seq_len)
            .with_lr(self.rates().of(self.kind()))
            .with_warmup_steps(self.warmup_steps)
            .with_min_lr_ratio(self.min_lr_ratio)
            .with_grad_clip(self.grad_clip)
            .with_weight_decay(self.weight_decay)
            .with_rank(self.rank)
            .with_update_interval(self.update_interval)
            .with_eval_every(self.eval_every)
            .with_eval_batches(self.eval_batches)
            .with_checkpoint_every(self.checkpoint_every)
            .with_log_every(self.log_every)
            .with_seed(self.seed)
            .with_synthetic_tokens(self.synthetic_tokens)
            .with_valid_fraction(self.valid_fraction)
            .with_wgsl_kernels(self.wgsl_kernels)
            .with_cpu_kernels(self.cpu_kernels)
    }
}

fn run(cli: Cli) -> Result<(), PretrainError> {
    let config = cli.config();
    config.validate()?;
    let kind = config.optimizer_kind()?;
    let corpus = config.corpus()?;
    let picked = pick(&cli.device)?;
    let model = config.model(corpus.vocab)?;
    let rates = cli.rates();
    let kinds = if cli.compare {
        OptimizerKind::ALL.to_vec()
    } else {
        vec![kind]
    };
    for &k in &kinds {
        config.clone().with_lr(rates.of(k)).validate()?;
    }
    print_setup(&cli, &config, &corpus, &picked, &model, &kinds);
    let out = cli.out.clone().unwrap_or_else(|| {
        if cli.sweep {
            PathBuf::from("runs/sweep")
        } else {
            default_out_dir(cli.compare, kind)
        }
    });
    let opts = RunOptions {
        resume: cli.resume,
        overwrite: cli.overwrite,
        ..RunOptions::new(&out)
    };
    if cli.sweep {
        let (_, table) = sweep(
            &config,
            &kinds,
            &rates,
            &cli.sweep_factors,
            &corpus,
            &picked,
            &opts,
        )?;
        println!("\n{table}");
        println!(
            "wrote {0}/sweep.md, {0}/sweep.csv and one directory per run",
            out.display()
        );
    } else if cli.compare {
        let (_, table) = compare(&config, &rates, &corpus, &picked, &opts)?;
        println!("\n{table}");
        println!(
            "wrote {0}/compare.md, {0}/compare.csv, {0}/loss.svg and one directory per optimizer",
            out.display()
        );
    } else {
        let summary = train(&config, &corpus, &picked, &opts)?;
        print_summary(&summary, &config, &out);
    }
    Ok(())
}

/// What the run will do: the device, the model, the data and its loss floor, the training
/// settings of `kinds` (their rates from `cli`).
fn print_setup(
    cli: &Cli,
    config: &TrainConfig,
    corpus: &Corpus,
    picked: &Picked,
    model: &LlamaConfig,
    kinds: &[OptimizerKind],
) {
    let rates = cli.rates();
    println!("device: {}", picked.description);
    println!(
        "model: llama {} ({} layers, width {}, {} heads, MLP {}), vocab {}, {:.2} M parameters",
        config.size,
        model.num_layers,
        model.hidden_size,
        model.num_heads,
        model.intermediate_size,
        model.vocab_size,
        model.num_params() as f64 / 1e6
    );
    println!(
        "data: {}; {} training / {} held-out tokens",
        corpus.description,
        corpus.train.len(),
        corpus.valid.len()
    );
    if let (Some(h), Some(f)) = (corpus.entropy_rate, corpus.valid_floor) {
        println!(
            "loss floor: entropy rate {h:.4} nats/token (the source scores {f:.4} on the held-out split)"
        );
    }
    let lr = match (cli.compare || cli.sweep, kinds) {
        (true, [_, _, ..]) => format!(
            "lr AdamW {:e}, low-rank {:e}",
            rates.of(OptimizerKind::AdamW),
            rates.of(OptimizerKind::SubTrackPlusPlus)
        ),
        _ => format!("lr {:e}", config.lr),
    };
    let lr = if cli.sweep {
        format!("{lr} × {:?}", cli.sweep_factors)
    } else {
        lr
    };
    println!(
        "training: {} steps of {}×{} tokens, {lr} (warmup {}, cosine to ×{}), clip {}, rank {}, T {}",
        config.steps,
        config.batch_size,
        config.seq_len,
        config.warmup_steps,
        config.min_lr_ratio,
        config.grad_clip,
        config.rank.unwrap_or_else(|| model.default_rank()),
        config.update_interval
    );
}

/// What a single run achieved and the files it wrote into `out`.
fn print_summary(s: &RunSummary, config: &TrainConfig, out: &Path) {
    let kind = s.optimizer;
    println!(
        "\n{}: final eval loss {:.4} (perplexity {:.2}), train loss {:.4}, {:.1} s, {:.0} tokens/s",
        kind.label(),
        s.final_eval_loss,
        s.final_eval_loss.exp(),
        s.final_train_loss,
        s.wall_s,
        s.tokens_per_s
    );
    println!(
        "optimizer state: {} ({} projected, {} dense); peak memory: {} ({})",
        human_bytes(s.state.total as u64),
        human_bytes(s.state.projected as u64),
        human_bytes(s.state.dense as u64),
        s.peak_memory.map_or("n/a".into(), human_bytes),
        s.memory_kind
    );
    if s.skipped_steps > 0 {
        println!(
            "skipped steps (non-finite loss or gradient): {}",
            s.skipped_steps
        );
    }
    if let Some(residual) = s.mean_residual_fraction {
        println!(
            "subspace: mean residual fraction {residual:.3} over {} updates of projected matrices",
            s.subspace_updates
        );
    }
    let mut wrote = vec!["log.csv", "loss.svg", "checkpoint.bin"];
    if config.data.is_some() {
        wrote.push("samples.txt");
    }
    if kind.is_low_rank() {
        wrote.extend(["subspace.csv", "subspace.svg"]);
    }
    let dir = out.display();
    let wrote: Vec<String> = wrote.iter().map(|f| format!("{dir}/{f}")).collect();
    println!("wrote {}", wrote.join(", "));
}

fn main() -> ExitCode {
    // A panic on Burn's or wgpu's threads would leave this one waiting forever.
    exit_on_background_panic();
    // Bad options print clap's message and exit with status 2.
    let mut cli = Cli::parse();
    let result = match cli.command.take() {
        Some(Command::Generate(args)) => generate(args),
        None => run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
