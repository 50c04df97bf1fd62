//! Pre-train a toy LLaMA with SubTrack++ (or AdamW, GaLore, SubTrack-Grad; or all four with
//! `--compare`) on an embedded synthetic corpus or your own text. Nothing is downloaded.
//!
//! `cargo run --release --example pretrain_llama -- --help`

use std::path::PathBuf;
use std::process::ExitCode;

use subtrack_llama::alloc::CountingAlloc;
use subtrack_llama::config::default_out_dir;
use subtrack_llama::device::{DEVICE_HELP, pick};
use subtrack_llama::panics::exit_on_background_panic;
use subtrack_llama::report::human_bytes;
use subtrack_llama::{PretrainError, RunOptions, TrainConfig, compare, train};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const HELP: &str = "\
pretrain_llama: pre-train a small LLaMA with AdamW, GaLore, SubTrack-Grad or SubTrack++

USAGE: cargo run --release --example pretrain_llama -- [OPTIONS]

  --optimizer NAME       adamw | galore | subtrack-grad | subtrack++   [subtrack++]
  --compare              run all four on the same data and seed; print a table
  --size NAME            9m 20m 35m 60m 130m 350m 1b (GaLore's llama shapes)  [9m]
  --device SPEC          {DEVICES}  [auto]
  --data FILE            train on a UTF-8 text file (byte tokens) instead of the synthetic corpus
  --steps N              optimizer steps                        [600]
  --batch-size N         sequences per batch                    [16]
  --seq-len N            tokens per sequence                    [128]
  --lr X                 peak learning rate                     [2e-3]
  --warmup-steps N       linear warmup                          [50]
  --min-lr-ratio X       final lr / peak lr (cosine decay)      [0.1]
  --grad-clip X          global gradient-norm bound             [1.0]
  --weight-decay X       decoupled weight decay                 [0]
  --rank N               projection rank      [GaLore's for the size; 32 at 9m]
  --update-interval N    subspace update interval T             [100]
  --eval-every N         held-out evaluation interval           [50]
  --eval-batches N       batches per evaluation                 [8]
  --checkpoint-every N   checkpoint interval                    [200]
  --log-every N          progress and CSV interval              [10]
  --seed N               seed of model, corpus and batches      [42]
  --synthetic-tokens N   size of the synthetic corpus           [1000000]
  --valid-fraction X     held-out fraction                      [0.1]
  --out DIR              output directory     [runs/<optimizer> or runs/compare]
  --resume               continue from DIR/checkpoint.bin
  --no-wgsl-kernels      Burn's tensor ops instead of the WGSL kernels on wgpu
  --no-cpu-kernels       Burn's tensor ops instead of the fused loops on the CPU (flex)
  --overwrite            start over even if DIR holds a checkpoint
  -h, --help             this text
";

struct Cli {
    config: TrainConfig,
    compare: bool,
    device: String,
    out: Option<PathBuf>,
    resume: bool,
    overwrite: bool,
}

fn parse_args(args: &[String]) -> Result<Option<Cli>, String> {
    let mut config = TrainConfig::new();
    let mut cli_compare = false;
    let mut device = "auto".to_string();
    let mut out = None;
    let (mut resume, mut overwrite) = (false, false);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--optimizer" => config.optimizer = value()?,
            "--compare" => cli_compare = true,
            "--size" => config.size = value()?,
            "--device" => device = value()?,
            "--data" => config.data = Some(value()?),
            "--steps" => config.steps = num(flag, value()?)?,
            "--batch-size" => config.batch_size = num(flag, value()?)?,
            "--seq-len" => config.seq_len = num(flag, value()?)?,
            "--lr" => config.lr = num(flag, value()?)?,
            "--warmup-steps" => config.warmup_steps = num(flag, value()?)?,
            "--min-lr-ratio" => config.min_lr_ratio = num(flag, value()?)?,
            "--grad-clip" => config.grad_clip = num(flag, value()?)?,
            "--weight-decay" => config.weight_decay = num(flag, value()?)?,
            "--rank" => config.rank = Some(num(flag, value()?)?),
            "--update-interval" => config.update_interval = num(flag, value()?)?,
            "--eval-every" => config.eval_every = num(flag, value()?)?,
            "--eval-batches" => config.eval_batches = num(flag, value()?)?,
            "--checkpoint-every" => config.checkpoint_every = num(flag, value()?)?,
            "--log-every" => config.log_every = num(flag, value()?)?,
            "--seed" => config.seed = num(flag, value()?)?,
            "--synthetic-tokens" => config.synthetic_tokens = num(flag, value()?)?,
            "--valid-fraction" => config.valid_fraction = num(flag, value()?)?,
            "--out" => out = Some(PathBuf::from(value()?)),
            "--resume" => resume = true,
            "--wgsl-kernels" => config.wgsl_kernels = true,
            "--no-wgsl-kernels" => config.wgsl_kernels = false,
            "--no-cpu-kernels" => config.cpu_kernels = false,
            "--overwrite" => overwrite = true,
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    if resume && overwrite {
        return Err("--resume and --overwrite contradict each other".into());
    }
    Ok(Some(Cli {
        config,
        compare: cli_compare,
        device,
        out,
        resume,
        overwrite,
    }))
}

fn run(cli: Cli) -> Result<(), PretrainError> {
    let config = cli.config;
    config.validate()?;
    let kind = config.optimizer_kind()?;
    let corpus = config.corpus()?;
    let picked = pick(&cli.device)?;
    let model = config.model(corpus.vocab)?;
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
    println!(
        "training: {} steps of {}×{} tokens, lr {} (warmup {}, cosine to ×{}), clip {}, rank {}, T {}",
        config.steps,
        config.batch_size,
        config.seq_len,
        config.lr,
        config.warmup_steps,
        config.min_lr_ratio,
        config.grad_clip,
        config.rank.unwrap_or_else(|| model.default_rank()),
        config.update_interval
    );
    let out = cli
        .out
        .unwrap_or_else(|| default_out_dir(cli.compare, kind));
    let opts = RunOptions {
        resume: cli.resume,
        overwrite: cli.overwrite,
        ..RunOptions::new(&out)
    };
    if cli.compare {
        let (_, table) = compare(&config, &corpus, &picked, &opts)?;
        println!("\n{table}");
        println!(
            "wrote {0}/compare.md, {0}/compare.csv, {0}/loss.svg and one directory per optimizer",
            out.display()
        );
    } else {
        let s = train(&config, &corpus, &picked, &opts)?;
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
        println!(
            "wrote {0}/log.csv, {0}/loss.svg, {0}/checkpoint.bin",
            out.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    // A panic on Burn's or wgpu's threads would leave this one waiting forever.
    exit_on_background_panic();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let help = HELP.replace("{DEVICES}", DEVICE_HELP);
    let cli = match parse_args(&args) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
