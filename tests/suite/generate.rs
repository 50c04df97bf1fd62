//! Text from the pre-training job (`llama/src/generate.rs`): the sampler's distribution,
//! the escaping, the samples a text run writes at each evaluation, and `generate` from a
//! run's checkpoint, deterministic for a seed and refusing what it cannot continue. CPU only.

use subtrack::testing::rng::SplitMix;
use subtrack_llama::device::pick;
use subtrack_llama::generate::{Sampling, draw, escape, generate, printable};
use subtrack_llama::run::SAMPLE_PROMPT_BYTES;
use subtrack_llama::{PretrainError, RunOptions, TrainConfig, train};

use crate::fresh_dir;

#[test]
fn draws_follow_temperature_and_top_k() {
    let logits = [0.0f32, 3.0, 1.0, 3.0];
    let greedy = Sampling {
        length: 1,
        temperature: 1e-3,
        top_k: None,
        seed: 1,
    };
    // Near-greedy: one of the two tied maxima, never the others.
    let mut rng = SplitMix::new(1);
    for _ in 0..100 {
        let t = draw(&logits, &greedy, &mut rng);
        assert!(t == 1 || t == 3, "{t}");
    }
    // Top-1 at any temperature: the first of the tied maxima, always.
    let top1 = Sampling {
        top_k: Some(1),
        temperature: 5.0,
        ..greedy.clone()
    };
    assert!((0..100).all(|_| draw(&logits, &top1, &mut rng) == 1));
    // Temperature 1 over all four: frequencies within 0.01 of the softmax, computed here
    // in f64 (e^0, e^3, e^1, e^3)/Σ = 0.0237, 0.4762, 0.0644, 0.4762 over 20,000 draws
    // (three standard deviations: at most 0.0107).
    let free = Sampling {
        temperature: 1.0,
        ..greedy.clone()
    };
    let mut counts = [0usize; 4];
    for _ in 0..20_000 {
        counts[draw(&logits, &free, &mut rng) as usize] += 1;
    }
    let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
    for (i, &c) in counts.iter().enumerate() {
        let p = f64::from(logits[i]).exp() / z;
        assert!(
            (c as f64 / 20_000.0 - p).abs() < 0.011,
            "token {i}: {c} vs p = {p}"
        );
    }
    // Top-2 at temperature 1: only the tied maxima, about half each.
    let top2 = Sampling {
        top_k: Some(2),
        ..free
    };
    let ones = (0..2_000)
        .filter(|_| draw(&logits, &top2, &mut rng) == 1)
        .count();
    assert!((850..1150).contains(&ones), "{ones} of 2,000");
    // Bad settings are refused.
    for (bad, what) in [
        (
            Sampling {
                length: 0,
                ..greedy.clone()
            },
            "--length",
        ),
        (
            Sampling {
                temperature: 0.0,
                ..greedy.clone()
            },
            "--temperature",
        ),
        (
            Sampling {
                temperature: f64::NAN,
                ..greedy.clone()
            },
            "--temperature",
        ),
        (
            Sampling {
                top_k: Some(0),
                ..greedy.clone()
            },
            "--top-k",
        ),
    ] {
        match bad.validate() {
            Err(PretrainError::InvalidArgument(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn escaping_keeps_the_terminal_sane() {
    let bytes = b"a\tb\nc\x1b[2J\xff";
    assert_eq!(escape(bytes), "a\\tb\\nc\\u{1b}[2J\u{fffd}");
    assert_eq!(printable(bytes), "a\tb\nc\\u{1b}[2J\u{fffd}");
}

/// A tiny run on a text file writes one sample per evaluation to samples.txt; `generate`
/// from its checkpoint gives the same bytes for the same seed, and refuses a missing,
/// corrupt or synthetic-corpus checkpoint with a clear error.
#[test]
fn samples_while_training_and_generate_from_the_checkpoint() {
    let (_tmp, dir) = fresh_dir("generate");
    std::fs::create_dir_all(&dir).unwrap();
    let text = "It was the best of times, it was the worst of times, it was the age of wisdom, \
                it was the age of foolishness. "
        .repeat(60);
    let data = dir.join("text.txt");
    std::fs::write(&data, &text).unwrap();
    let config = TrainConfig::new()
        .with_size("tiny".into())
        .with_data(Some(data.display().to_string()))
        .with_steps(20)
        .with_batch_size(4)
        .with_seq_len(32)
        .with_lr(1e-2)
        .with_warmup_steps(2)
        .with_eval_every(10)
        .with_eval_batches(1)
        .with_checkpoint_every(10)
        .with_log_every(10)
        .with_update_interval(5);
    let run = dir.join("run");
    let opts = RunOptions {
        verbose: false,
        ..RunOptions::new(&run)
    };
    let corpus = config.corpus().unwrap();
    train(&config, &corpus, &pick("cpu").unwrap(), &opts).unwrap();
    let samples = std::fs::read_to_string(run.join("samples.txt")).unwrap();
    let lines: Vec<&str> = samples.lines().collect();
    assert_eq!(lines.len(), 3, "steps 0, 10 and 20:\n{samples}");
    let prompt = escape(
        &corpus.valid[..SAMPLE_PROMPT_BYTES]
            .iter()
            .map(|&t| t as u8)
            .collect::<Vec<_>>(),
    );
    for (line, step) in lines.iter().zip([0, 10, 20]) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields[0], format!("step {step}"));
        assert_eq!(fields[1], prompt);
        assert!(!fields[2].is_empty() && !fields[2].contains('\n'));
    }

    let device = pick("cpu").unwrap().device;
    let sampling = |seed| Sampling {
        length: 40,
        temperature: 0.8,
        top_k: Some(20),
        seed,
    };
    let once = generate(&run, b"it was the ", &sampling(7), &device).unwrap();
    let again = generate(&run, b"it was the ", &sampling(7), &device).unwrap();
    let other = generate(&run, b"it was the ", &sampling(8), &device).unwrap();
    assert_eq!(once.len(), 40);
    assert_eq!(once, again, "the same seed, checkpoint and prompt");
    assert_ne!(once, other, "another seed");

    // What generate cannot continue.
    let err =
        |dir: &std::path::Path, prompt: &[u8]| match generate(dir, prompt, &sampling(7), &device) {
            Err(e) => e.to_string(),
            Ok(text) => panic!("{}: generated {text:?}", dir.display()),
        };
    assert!(err(&run, b"").contains("empty prompt"));
    assert!(err(&dir.join("nowhere"), b"x").contains("does not exist"));
    let synthetic = dir.join("synthetic");
    let tiny = config
        .clone()
        .with_data(None)
        .with_steps(10)
        .with_synthetic_tokens(20_000);
    train(
        &tiny,
        &tiny.corpus().unwrap(),
        &pick("cpu").unwrap(),
        &RunOptions {
            verbose: false,
            ..RunOptions::new(&synthetic)
        },
    )
    .unwrap();
    assert!(err(&synthetic, b"x").contains("synthetic corpus"));
    let ckpt = run.join("checkpoint.bin");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&ckpt, &bytes).unwrap();
    let msg = err(&run, b"x");
    assert!(msg.contains("checksum"), "{msg}");
}
