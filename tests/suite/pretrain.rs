//! The pre-training job (the `subtrack-llama` crate in `llama/`): data, model, clipping, the loop, checkpoints,
//! the comparison table and its refusals of bad input. CPU (flex) only: a training run on
//! lavapipe would take minutes.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor};
use subtrack::SubspaceDiagnostics;
use subtrack_llama::ckpt::Checkpoint;
use subtrack_llama::clip::{clip_to, global_norm};
use subtrack_llama::compare::parse_compare_csv;
use subtrack_llama::data::{Corpus, MarkovSource};
use subtrack_llama::device::{Picked, pick};
use subtrack_llama::report::nice_ticks;
use subtrack_llama::schedule::CosineWarmup;
use subtrack_llama::subspace::{
    SUBSPACE_CSV_HEADER, csv_prefix as subspace_prefix, csv_rows, mean_residual, residual_curves,
};
use subtrack_llama::sweep::{SweepPoint, best};
use subtrack_llama::{
    LearningRates, LlamaConfig, OptimizerKind, PretrainError, RunOptions, TrainConfig, compare,
    train,
};

use crate::fresh_dir;

fn tiny(steps: usize) -> TrainConfig {
    TrainConfig::new()
        .with_size("tiny".into())
        .with_steps(steps)
        .with_batch_size(8)
        .with_seq_len(32)
        .with_lr(1e-2)
        .with_warmup_steps(2)
        .with_eval_every(10)
        .with_eval_batches(2)
        .with_checkpoint_every(10)
        .with_log_every(5)
        .with_update_interval(5)
        .with_synthetic_tokens(40_000)
}

fn cpu() -> Picked {
    pick("cpu").unwrap()
}

fn quiet(dir: &Path) -> RunOptions {
    RunOptions {
        verbose: false,
        ..RunOptions::new(dir)
    }
}

#[test]
fn markov_entropy_rate_is_exact() {
    // All noise: every token uniform, so the rate is ln V exactly.
    let uniform = MarkovSource::new(16, 3, 1.0, 5);
    assert!((uniform.entropy_rate() - 16f64.ln()).abs() < 1e-12);
    // Deterministic successor plus noise: per context, 1 − ε + ε/V on one symbol and ε/V
    // on each of the others, whatever the stationary distribution.
    let (v, eps) = (8usize, 0.1);
    let single = MarkovSource::new(v, 1, eps, 9);
    let p_hi = 1.0 - eps + eps / v as f64;
    let p_lo = eps / v as f64;
    let h = -p_hi * p_hi.ln() - (v as f64 - 1.0) * p_lo * p_lo.ln();
    assert!((single.entropy_rate() - h).abs() < 1e-10);
    // The default source: a long sample's NLL under the source converges to its rate.
    let source = MarkovSource::new(64, 4, 0.02, 42);
    let sample = source.sample(400_000, 7);
    let (rate, nll) = (source.entropy_rate(), source.nll(&sample));
    assert!((rate - nll).abs() / rate < 0.01, "rate {rate} vs NLL {nll}");
    assert!(rate < 64f64.ln() * 0.5);
}

#[test]
fn batches_are_shifted_windows_and_repeatable() {
    let corpus = Corpus::synthetic(5_000, 1_000, 3);
    let device = Device::flex();
    let (x, y) = corpus.train_batch(1, 7, 4, 16, &device);
    let (x2, _) = corpus.train_batch(1, 7, 4, 16, &device);
    let (x3, _) = corpus.train_batch(1, 8, 4, 16, &device);
    let xs: Vec<i64> = x
        .clone()
        .into_data()
        .convert::<i64>()
        .try_into_vec()
        .unwrap();
    let ys: Vec<i64> = y.into_data().convert::<i64>().try_into_vec().unwrap();
    for row in 0..4 {
        assert_eq!(xs[row * 16 + 1..row * 16 + 16], ys[row * 16..row * 16 + 15]);
    }
    assert_eq!(x.clone().into_data(), x2.into_data());
    assert_ne!(x.into_data(), x3.into_data());
    let valid = corpus.valid_batches(4, 16, 100, &device);
    assert_eq!(valid.len(), (999usize / 16).div_ceil(4));
}

#[test]
fn model_counts_and_projected_state_bytes_are_exact() {
    let config = LlamaConfig::preset("tiny", 64).unwrap();
    let model = config.init(&Device::flex()).unwrap();
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0 += p.val().shape().num_elements();
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    assert_eq!(count.0, config.num_params());

    // One GaLore step on the tiny model: projected matrices hold S (a×r) and M, V (r×b),
    // everything else AdamW's two moments: (m·r + 2·n·r) vs 2·m·n floats.
    let run = tiny(1)
        .with_optimizer("galore".into())
        .with_eval_every(1)
        .with_warmup_steps(1);
    let (_dir_tmp, dir) = fresh_dir("bytes");
    let s = train(&run, &run.corpus().unwrap(), &cpu(), &quiet(&dir)).unwrap();
    let (d, f, v, r, l) = (64, 176, 64, 16, 2);
    let projected = l * (4 * (d * r + 2 * r * d) + 3 * (d * r + 2 * r * f)) * 4;
    let dense = (2 * v * d + 2 * l * d + d) * 2 * 4;
    assert_eq!(s.state.projected, projected);
    assert_eq!(s.state.dense, dense);
    let adamw = train(
        &run.clone().with_optimizer("adamw".into()),
        &run.corpus().unwrap(),
        &cpu(),
        &RunOptions {
            overwrite: true,
            ..quiet(&dir)
        },
    )
    .unwrap();
    assert_eq!(adamw.state.total, 2 * 4 * config.num_params());
}

#[test]
fn global_norm_clipping_matches_host_sums() {
    let device = Device::flex().autodiff();
    device.seed(3);
    let model = LlamaConfig::preset("tiny", 64)
        .unwrap()
        .init(&device)
        .unwrap();
    let corpus = Corpus::synthetic(5_000, 1_000, 3);
    let (x, y) = corpus.train_batch(1, 0, 4, 16, &device);
    let mut grads = GradientsParams::from_grads(model.loss(x, y).backward(), &model);
    struct HostSum<'a>(&'a GradientsParams, f64);
    impl ModuleVisitor for HostSum<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let g: Vec<f32> = self
                .0
                .get::<D>(p.id)
                .unwrap()
                .into_data()
                .try_into_vec()
                .unwrap();
            self.1 += g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
        }
    }
    let mut host = HostSum(&grads, 0.0);
    model.visit(&mut host);
    let expected = host.1.sqrt();
    let norm = global_norm(&grads, &model);
    assert!(
        (norm - expected).abs() / expected < 1e-5,
        "{norm} vs {expected}"
    );
    assert_eq!(clip_to(&mut grads, &model, norm, 2.0 * norm), 1.0);
    let factor = clip_to(&mut grads, &model, norm, norm / 4.0);
    assert!((factor - 0.25).abs() < 1e-12);
    let clipped = global_norm(&grads, &model);
    assert!((clipped - norm / 4.0).abs() / norm < 1e-5, "{clipped}");
}

#[test]
fn a_few_steps_make_the_loss_fall() {
    for optimizer in ["adamw", "subtrack++"] {
        let config = tiny(30).with_optimizer(optimizer.into());
        let (_dir_tmp, dir) = fresh_dir(&format!("falls-{}", optimizer.replace('+', "p")));
        let s = train(&config, &config.corpus().unwrap(), &cpu(), &quiet(&dir)).unwrap();
        let first = s.eval_curve.first().unwrap().1;
        assert_eq!(s.eval_curve.first().unwrap().0, 0.0);
        assert!(
            s.final_eval_loss < first - 0.2,
            "{optimizer}: held-out loss {first} → {}",
            s.final_eval_loss
        );
        assert_eq!(s.skipped_steps, 0);
        let csv = std::fs::read_to_string(dir.join("log.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 1 + 30 / 5);
        let svg = std::fs::read_to_string(dir.join("loss.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
        // The subspace diagnostics: 14 projected matrices at k = 5, 10, 15, 20 and 25.
        let subspace = std::fs::read_to_string(dir.join("subspace.csv"));
        if optimizer == "adamw" {
            assert!(subspace.is_err() && s.mean_residual_fraction.is_none());
            continue;
        }
        let subspace = subspace.unwrap();
        let rows: Vec<Vec<&str>> = subspace
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        assert_eq!(rows.len(), 14 * 5);
        for row in &rows {
            let residual: f64 = row[7].parse().unwrap();
            let angle: f64 = row[6].parse().unwrap();
            let limiter: f64 = row[8].parse().unwrap();
            assert!(residual > 0.0 && residual < 1.0, "{row:?}");
            assert!(
                (0.0..=std::f64::consts::FRAC_PI_2).contains(&angle),
                "{row:?}"
            );
            assert!(limiter > 0.0 && limiter <= 1.0, "{row:?}");
        }
        let types: std::collections::BTreeSet<&str> = rows.iter().map(|r| r[1]).collect();
        assert_eq!(
            types.into_iter().collect::<Vec<_>>(),
            ["attention", "mlp down", "mlp gate/up"]
        );
        let mean = s.mean_residual_fraction.unwrap();
        assert!(mean > 0.0 && mean < 1.0, "{mean}");
        let svg = std::fs::read_to_string(dir.join("subspace.svg")).unwrap();
        assert_eq!(
            svg.matches("<polyline").count(),
            3,
            "one line per matrix type"
        );
    }
}

/// Every float parameter's values, in visiting order.
struct Weights(Vec<Vec<f32>>);

impl ModuleVisitor for Weights {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.push(p.val().into_data().try_into_vec().unwrap());
    }
}

/// step, train loss and eval loss columns of a CSV log (timings differ between runs).
fn loss_columns(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            format!("{},{},{}", c[0], c[2], c[3])
        })
        .collect()
}

#[test]
fn resume_continues_exactly() {
    // T = 5 puts subspace updates before and after the interruption at step 10.
    let config = tiny(20);
    let corpus = config.corpus().unwrap();
    let (_whole_dir_tmp, whole_dir) = fresh_dir("whole");
    let whole = train(&config, &corpus, &cpu(), &quiet(&whole_dir)).unwrap();

    let (_split_dir_tmp, split_dir) = fresh_dir("split");
    let first = train(
        &config,
        &corpus,
        &cpu(),
        &RunOptions {
            stop_after: Some(10),
            ..quiet(&split_dir)
        },
    )
    .unwrap();
    assert_eq!(first.steps, 10);
    // 14 projected matrices (7 per block) update after 5, 10 and 15 completed steps: one
    // update before the interruption, the next one right after the resume.
    assert_eq!(first.subspace_updates, 14);
    let resumed = train(
        &config,
        &corpus,
        &cpu(),
        &RunOptions {
            resume: true,
            ..quiet(&split_dir)
        },
    )
    .unwrap();
    assert_eq!(resumed.steps, 20);
    assert_eq!(resumed.subspace_updates, 2 * 14);
    assert_eq!(whole.subspace_updates, 3 * 14);
    assert_eq!(resumed.final_eval_loss, whole.final_eval_loss);
    assert_eq!(resumed.final_train_loss, whole.final_train_loss);
    assert_eq!(
        loss_columns(&split_dir.join("log.csv")),
        loss_columns(&whole_dir.join("log.csv"))
    );
    // The diagnostics of the update before the interruption survive it, and the resumed
    // run's match the uninterrupted run's.
    let subspace = |dir: &Path| std::fs::read_to_string(dir.join("subspace.csv")).unwrap();
    assert_eq!(subspace(&whole_dir).lines().count(), 1 + 3 * 14);
    assert_eq!(subspace(&split_dir), subspace(&whole_dir));
    assert_eq!(resumed.mean_residual_fraction, whole.mean_residual_fraction);
    let weights = |dir: &Path| {
        let ckpt = Checkpoint::load(&dir.join("checkpoint.bin")).unwrap();
        assert_eq!(ckpt.step, 20);
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(ckpt.model)).unwrap();
        let model = config
            .model(corpus.vocab)
            .unwrap()
            .init(&Device::flex())
            .unwrap();
        let mut all = Weights(Vec::new());
        model.try_load_record(record).unwrap().visit(&mut all);
        all.0
    };
    let (a, b) = (weights(&whole_dir), weights(&split_dir));
    assert_eq!(a.len(), b.len());
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
}

#[test]
fn compare_table_is_produced_and_parses() {
    let config = tiny(4).with_eval_every(4);
    let (_dir_tmp, dir) = fresh_dir("compare");
    let rates = LearningRates {
        dense: Some(1e-2),
        low_rank: None,
    };
    let (runs, table) = compare(
        &config,
        &rates,
        &config.corpus().unwrap(),
        &cpu(),
        &quiet(&dir),
    )
    .unwrap();
    assert_eq!(runs.len(), 4);
    let rows =
        parse_compare_csv(&std::fs::read_to_string(dir.join("compare.csv")).unwrap()).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["adamw", "galore", "subtrack-grad", "subtrack++"]);
    for (name, loss, _) in &rows {
        assert!(loss.is_finite() && *loss > 0.0, "{name}: {loss}");
    }
    // Same data and seed: the four start from the same held-out loss.
    let starts: Vec<f64> = runs.iter().map(|r| r.eval_curve[0].1).collect();
    assert!(starts.iter().all(|s| *s == starts[0]), "{starts:?}");
    let adamw_bytes = rows[0].2;
    assert!(rows[1..].iter().all(|r| r.2 < adamw_bytes));
    assert_eq!(
        rows[1].2, rows[2].2,
        "GaLore and SubTrack-Grad hold the same state"
    );
    assert_eq!(
        table,
        std::fs::read_to_string(dir.join("compare.md")).unwrap()
    );
    let table_rows = table.lines().filter(|l| l.starts_with("| ")).count();
    assert_eq!(table_rows, 1 + 4);
    // Each at its own rate, named in the table; AdamW has no subspace, the others a mean
    // residual fraction from their updates at k = 5 … (4 steps: none, so "—" for all).
    let lrs: Vec<f64> = runs.iter().map(|r| r.lr).collect();
    let own = |k: OptimizerKind| k.default_lr();
    assert_eq!(
        lrs,
        [
            1e-2,
            own(OptimizerKind::GaLore),
            own(OptimizerKind::SubTrackGrad),
            own(OptimizerKind::SubTrackPlusPlus)
        ]
    );
    assert!(table.contains("| AdamW | 1e-2 |"), "{table}");
    let subtrack_row = format!(
        "| SubTrack++ | {:e} |",
        own(OptimizerKind::SubTrackPlusPlus)
    );
    assert!(table.contains(&subtrack_row), "{table}");
    assert!(runs.iter().all(|r| r.mean_residual_fraction.is_none()));
    assert!(
        std::fs::read_to_string(dir.join("loss.svg"))
            .unwrap()
            .matches("<polyline")
            .count()
            == 4
    );
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, PretrainError>) -> PretrainError {
    r.expect_err("bad input was accepted")
}

#[test]
fn bad_data_files_are_refused() {
    let (_dir_tmp, dir) = fresh_dir("data");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let cases = [
        (dir.join("missing.txt"), "cannot read"),
        (write("empty.txt", b""), "empty"),
        (
            write("binary.bin", &[0x7f, b'E', b'L', b'F', 0, 1, 2]),
            "binary",
        ),
        (
            write("latin1.txt", &[b'c', b'a', b'f', 0xe9, b'!']),
            "UTF-8",
        ),
        (write("short.txt", b"hello world"), "too short"),
    ];
    for (path, expected) in cases {
        match Corpus::from_text_file(&path, 0.1, 32) {
            Err(PretrainError::Data(msg)) => {
                assert!(msg.contains(expected), "{}: {msg}", path.display())
            }
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(40);
    let ok = Corpus::from_text_file(&write("ok.txt", text.as_bytes()), 0.1, 32).unwrap();
    assert_eq!(ok.vocab, 256);
    assert_eq!(ok.train.len() + ok.valid.len(), text.len());
}

#[test]
fn bad_configs_are_refused() {
    let cases = [
        (tiny(10).with_size("7m".into()), "unknown model size"),
        (tiny(10).with_optimizer("sgd".into()), "unknown optimizer"),
        (tiny(10).with_rank(Some(64)), "--rank"),
        (tiny(10).with_lr(-1.0), "--lr"),
        (tiny(10).with_lr(f64::NAN), "--lr"),
        (tiny(10).with_steps(0), "--steps"),
        (tiny(10).with_warmup_steps(11), "--warmup-steps"),
        (tiny(10).with_seq_len(1), "--seq-len"),
        (tiny(10).with_grad_clip(0.0), "--grad-clip"),
        (tiny(10).with_valid_fraction(0.9), "--valid-fraction"),
        // The flag the person gave, not the default one beside it.
        (
            TrainConfig::new()
                .with_seq_len(100_000)
                .with_steps(1)
                .with_warmup_steps(0),
            "--seq-len 100000 needs 1000010 held-out tokens",
        ),
    ];
    for (config, expected) in cases {
        match config.validate() {
            Err(PretrainError::InvalidArgument(msg)) => assert!(msg.contains(expected), "{msg}"),
            other => panic!("{expected}: {other:?}"),
        }
    }
    // A run that cannot fit in memory is refused before it allocates anything.
    let huge = TrainConfig::new()
        .with_size("1b".into())
        .with_batch_size(4096)
        .with_seq_len(1024)
        .with_warmup_steps(1)
        .with_steps(1);
    let corpus = Corpus::synthetic(20_000, 5_000, 1);
    let (_dir_tmp, dir) = fresh_dir("oom");
    match train(&huge, &corpus, &cpu(), &quiet(&dir)) {
        Err(PretrainError::OutOfMemory(msg)) => assert!(msg.contains("--batch-size"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(!dir.exists());
}

#[test]
fn checkpoints_are_never_lost_to_bad_input() {
    let config = tiny(10);
    let corpus = config.corpus().unwrap();
    let (_dir_tmp, dir) = fresh_dir("ckpt");
    train(&config, &corpus, &cpu(), &quiet(&dir)).unwrap();
    let path = dir.join("checkpoint.bin");
    let good = std::fs::read(&path).unwrap();

    // A new run into the same directory neither starts nor touches the checkpoint.
    let e = expect_err(train(&config, &corpus, &cpu(), &quiet(&dir)));
    assert!(
        matches!(&e, PretrainError::Checkpoint(m) if m.contains("--resume")),
        "{e}"
    );
    // A checkpoint of another run (other seed) is refused, naming the field.
    let other = config.clone().with_seed(7);
    let resume = RunOptions {
        resume: true,
        ..quiet(&dir)
    };
    let e = expect_err(train(&other, &other.corpus().unwrap(), &cpu(), &resume));
    assert!(
        matches!(&e, PretrainError::Checkpoint(m) if m.contains("seed")),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good);
    // Other evaluation and checkpoint intervals do not make it another run.
    let relaxed = config.clone().with_eval_every(3).with_checkpoint_every(7);
    let s = train(&relaxed, &corpus, &cpu(), &resume).unwrap();
    assert_eq!(s.steps, 10);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "nothing left to train, nothing written"
    );

    // A corrupt checkpoint is refused and left for inspection.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let e = expect_err(train(&config, &corpus, &cpu(), &resume));
    assert!(
        matches!(&e, PretrainError::Checkpoint(m) if m.contains("corrupt")),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bad);
    // A truncated one too.
    std::fs::write(&path, &good[..good.len() / 3]).unwrap();
    assert!(matches!(
        expect_err(train(&config, &corpus, &cpu(), &resume)),
        PretrainError::Checkpoint(_)
    ));
    // Resuming where there is no checkpoint says so.
    let (_empty_tmp, empty) = fresh_dir("ckpt-none");
    let e = expect_err(train(
        &config,
        &corpus,
        &cpu(),
        &RunOptions {
            resume: true,
            ..quiet(&empty)
        },
    ));
    assert!(
        matches!(&e, PretrainError::Checkpoint(m) if m.contains("cannot read")),
        "{e}"
    );
}

#[test]
fn trains_on_wgpu_when_an_adapter_exists() {
    // The job's GPU route: the same loop on Burn's wgpu device (lavapipe in CI).
    let Some(device) = crate::wgpu_device() else {
        return;
    };
    let picked = Picked {
        device,
        description: "wgpu test adapter".into(),
        is_wgpu: true,
    };
    // The portable route, then the WGSL kernels: the same run must give the same losses.
    let mut finals = Vec::new();
    for wgsl in [false, true] {
        let config = tiny(4)
            .with_batch_size(4)
            .with_warmup_steps(1)
            .with_eval_every(4)
            .with_eval_batches(1)
            .with_update_interval(2)
            .with_wgsl_kernels(wgsl);
        let (_dir_tmp, dir) = fresh_dir(if wgsl { "wgpu-kernels" } else { "wgpu" });
        // The MLP's 64×176 weights at rank 16 (the only run at these sizes with kernels).
        let launched = || {
            ["update", "adam", "recovery"].map(|k| {
                subtrack::testing::kernels::launches(
                    k,
                    if k == "adam" {
                        [16, 16, 176]
                    } else {
                        [64, 16, 176]
                    },
                )
            })
        };
        let before = launched();
        let s = train(&config, &config.corpus().unwrap(), &picked, &quiet(&dir)).unwrap();
        let after = launched();
        for k in 0..3 {
            assert_eq!(
                after[k] > before[k],
                wgsl,
                "WGSL kernels {wgsl}: launches {before:?} → {after:?}"
            );
        }
        assert!(
            s.final_eval_loss < s.eval_curve[0].1,
            "WGSL kernels {wgsl}: held-out loss {} → {}",
            s.eval_curve[0].1,
            s.final_eval_loss
        );
        // One update of each of the 14 projected matrices, before step 3.
        assert_eq!(s.subspace_updates, 14);
        assert!(s.peak_memory.is_some_and(|m| m > 0));
        finals.push(s.final_eval_loss);
    }
    let gap = (finals[0] - finals[1]).abs() / finals[0];
    assert!(
        gap < 1e-4,
        "portable {} vs WGSL kernels {}",
        finals[0],
        finals[1]
    );
}

#[test]
fn initial_weights_depend_on_the_seed_alone() {
    // Burn's CPU generator is process-wide; whatever it was seeded with (or drawn from by
    // other threads), `init_seeded` gives the same weights for the same seed.
    let config = LlamaConfig::preset("tiny", 64).unwrap();
    let device = Device::flex();
    let weights = |device_seed: u64, seed: u64| {
        device.seed(device_seed);
        let model = config.init_seeded(&device, seed).unwrap();
        let mut all = Vec::new();
        for layer in &model.layers {
            all.extend(
                layer
                    .mlp
                    .gate
                    .weight
                    .val()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
            );
        }
        all.extend(
            model
                .embedding
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        );
        (all, model.num_params())
    };
    let (a, n) = weights(1, 42);
    let (b, _) = weights(2, 42);
    let (c, _) = weights(1, 43);
    assert_eq!(a, b, "same seed, differently seeded device");
    assert_ne!(a, c, "another seed");
    assert!(n > 0);
    // N(0, init_std): the sample standard deviation of ~100k draws is within 2 %.
    let std = (a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
    assert!(
        (std / config.init_std - 1.0).abs() < 0.02,
        "std {std} vs {}",
        config.init_std
    );
}

// Checkpoint files: a round trip, and every flipped or missing byte refused.
#[test]
fn round_trip_and_corruption() {
    let c = Checkpoint {
        config_json: "{\"a\":1}".into(),
        step: 42,
        model: vec![1, 2, 3],
        optimizer: vec![9; 100],
    };
    let bytes = c.to_bytes();
    assert_eq!(Checkpoint::from_bytes(&bytes).unwrap(), c);
    for i in [0, 20, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        assert!(
            Checkpoint::from_bytes(&bad).is_err(),
            "flip at {i} accepted"
        );
    }
    assert!(Checkpoint::from_bytes(&bytes[..bytes.len() - 3]).is_err());
    // A version 1 file (FNV-1a checksum) is refused as such, not as corrupt.
    let mut old = bytes.clone();
    old[14..18].copy_from_slice(&1u32.to_le_bytes());
    let e = Checkpoint::from_bytes(&old).unwrap_err();
    assert!(
        e.contains("checkpoint version 1") && e.contains("reads version 2"),
        "{e}"
    );
}

// The learning-rate schedule: warmup, peak, cosine decay and floor.
#[test]
fn warmup_peak_and_floor() {
    let s = CosineWarmup {
        peak: 1e-3,
        min_ratio: 0.1,
        warmup: 10,
        total: 110,
    };
    assert!((s.lr(0) - 1e-4).abs() < 1e-15);
    assert!((s.lr(9) - 1e-3).abs() < 1e-15);
    assert!((s.lr(10) - 1e-3).abs() < 1e-15);
    // Halfway through the decay the cosine term is 1/2: 1e-4 + 9e-4 / 2.
    assert!((s.lr(60) - 5.5e-4).abs() < 1e-12);
    assert!((s.lr(110) - 1e-4).abs() < 1e-15);
    assert!((s.lr(500) - 1e-4).abs() < 1e-15);
    assert!((1..110).all(|i| i < 10 || s.lr(i) <= s.lr(i - 1)));
}

// The loss plot's axes: ticks at round values (1, 2 or 5 × 10^k) that cover the data.
#[test]
fn plot_ticks_are_round_and_cover_the_data() {
    assert_eq!(
        nice_ticks(0.805, 1.532, 5),
        (vec![0.8, 1.0, 1.2, 1.4, 1.6], 0.2)
    );
    assert_eq!(
        nice_ticks(0.0, 200.0, 6),
        (vec![0.0, 50.0, 100.0, 150.0, 200.0], 50.0)
    );
    // A flat curve still gets an axis one step wide: a span of |2| in 5 steps of 0.4,
    // rounded up to 0.5.
    assert_eq!(nice_ticks(2.0, 2.0, 5), (vec![2.0, 2.5], 0.5));
    let mut rng = crate::reference::Rng::new(3);
    for _ in 0..500 {
        let scale = 10f64.powf(rng.next() * 4.0);
        let (a, b) = (rng.next() * scale, rng.next() * scale);
        let (lo, hi) = (a.min(b), a.max(b));
        let (ticks, step) = nice_ticks(lo, hi, 5);
        let mantissa = step / 10f64.powf(step.log10().floor());
        assert!(
            [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-9),
            "step {step} for [{lo}, {hi}]"
        );
        assert!(ticks[0] <= lo + 1e-9 * scale && *ticks.last().unwrap() >= hi - 1e-9 * scale);
        assert!(
            (2..=11).contains(&ticks.len()),
            "{} ticks for [{lo}, {hi}]",
            ticks.len()
        );
        for pair in ticks.windows(2) {
            assert!((pair[1] - pair[0] - step).abs() <= 1e-9 * step.max(1.0) * 10.0);
        }
    }
}

#[test]
fn subspace_rows_round_trip_into_curves_and_means() {
    let model = LlamaConfig::new(256, 8, 20, 2, 1);
    let d = |shape, step, residual| SubspaceDiagnostics {
        shape,
        step,
        sigma: Some(2.0),
        theta: Some(0.02),
        principal_angle: 0.02,
        residual_fraction: residual,
        limiter_scale: None,
    };
    let rows = csv_rows(
        &[
            d([8, 8], 10, 0.5),
            d([8, 8], 10, 0.7),
            d([8, 20], 10, 0.2),
            d([20, 8], 20, 0.4),
        ],
        &model,
    );
    let text = format!("{SUBSPACE_CSV_HEADER}\n{rows}");
    let curves = residual_curves(&text);
    let names: Vec<&str> = curves.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["attention", "mlp down", "mlp gate/up"]);
    assert!((curves[0].1[0].1 - 0.6).abs() < 1e-12);
    assert_eq!(curves[1].1, [(20.0, 0.4)]);
    assert!((mean_residual(&text).unwrap() - 0.45).abs() < 1e-12);
    assert_eq!(subspace_prefix(&text, 20).lines().count(), 1 + 3);
    assert_eq!(mean_residual(SUBSPACE_CSV_HEADER), None);
}

#[test]
fn sweep_best_skips_diverged_runs_and_flags_the_edges() {
    let p = |optimizer, lr, final_eval_loss| SweepPoint {
        optimizer,
        lr,
        final_eval_loss,
    };
    let points = [
        p(OptimizerKind::AdamW, 1e-3, 2.0),
        p(OptimizerKind::AdamW, 2e-3, 1.9),
        p(OptimizerKind::AdamW, 4e-3, 1.95),
        p(OptimizerKind::GaLore, 4e-3, 2.1),
        p(OptimizerKind::GaLore, 8e-3, 2.0),
        p(OptimizerKind::GaLore, 1.6e-2, f64::NAN),
    ];
    let (b, edge) = best(&points, OptimizerKind::AdamW).unwrap();
    assert_eq!((b.lr, edge), (2e-3, false));
    let (b, edge) = best(&points, OptimizerKind::GaLore).unwrap();
    assert_eq!(
        (b.lr, edge),
        (8e-3, false),
        "the diverged 1.6e-2 is not best"
    );
    assert!(best(&points, OptimizerKind::SubTrackGrad).is_none());
    let (_, edge) = best(&points[..2], OptimizerKind::AdamW).unwrap();
    assert!(edge, "2e-3 is the highest of two");
}
