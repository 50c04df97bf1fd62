//! Training data: a synthetic corpus with a known entropy rate (the default; nothing is
//! downloaded) or any UTF-8 text file read as bytes. Both are split into a training and a
//! held-out validation stream; batches are windows drawn by a counter-based generator, so
//! the data position of a run is just the number of batches drawn.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::PretrainError;

/// The generator behind the corpus and the batch positions: the optimizer crate's one.
pub use subtrack::testing::rng::SplitMix;

/// A second-order Markov source over `vocab` symbols. Each token b has a set of `branching`
/// successors; after the pair (a, b) the next token is one of b's successors with
/// probabilities that depend on a, or, with probability `noise`, any token uniformly. So
/// the previous token alone narrows the next one to a few (learnt quickly), and the one
/// before sharpens it (learnt through attention). Noise makes the chain irreducible and
/// aperiodic, so its entropy rate is well defined; [`MarkovSource::entropy_rate`] computes
/// it exactly.
#[derive(Clone, Debug)]
pub struct MarkovSource {
    /// Symbols.
    pub vocab: usize,
    /// `probs[(a·vocab + b)·vocab + c]` = P(c | a, b).
    probs: Vec<f64>,
}

impl MarkovSource {
    /// A random source; the same `seed` gives the same source.
    pub fn new(vocab: usize, branching: usize, noise: f64, seed: u64) -> Self {
        let mut rng = SplitMix::new(seed ^ 0x5EED_C0DE);
        let v = vocab;
        let successors: Vec<Vec<usize>> = (0..v)
            .map(|_| (0..branching).map(|_| rng.below(v)).collect())
            .collect();
        let mut probs = vec![noise / v as f64; v * v * v];
        for a in 0..v {
            for (b, next) in successors.iter().enumerate() {
                // Cubed uniforms: peaked weights, so the older token carries information.
                let weights: Vec<f64> =
                    next.iter().map(|_| 0.02 + rng.next_f64().powi(3)).collect();
                let total: f64 = weights.iter().sum();
                for (&c, w) in next.iter().zip(weights) {
                    probs[(a * v + b) * v + c] += (1.0 - noise) * w / total;
                }
            }
        }
        Self { vocab, probs }
    }

    /// P(c | a, b).
    pub fn prob(&self, a: usize, b: usize, c: usize) -> f64 {
        self.probs[(a * self.vocab + b) * self.vocab + c]
    }

    /// `len` tokens of the chain started from (0, 0), drawn with `seed`.
    pub fn sample(&self, len: usize, seed: u64) -> Vec<u32> {
        let v = self.vocab;
        let mut rng = SplitMix::new(seed);
        let (mut a, mut b) = (0usize, 0usize);
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            let row = &self.probs[(a * v + b) * v..(a * v + b + 1) * v];
            let mut u = rng.next_f64();
            let mut c = v - 1;
            for (i, p) in row.iter().enumerate() {
                if u < *p {
                    c = i;
                    break;
                }
                u -= p;
            }
            out.push(c as u32);
            (a, b) = (b, c);
        }
        out
    }

    /// Exact entropy rate in nats/token: Σ π(a,b)·H(·|a,b) over the stationary distribution
    /// π of pairs, found by power iteration.
    pub fn entropy_rate(&self) -> f64 {
        let v = self.vocab;
        let mut pi = vec![1.0 / (v * v) as f64; v * v];
        for _ in 0..5_000 {
            let mut next = vec![0.0; v * v];
            for a in 0..v {
                for b in 0..v {
                    let mass = pi[a * v + b];
                    for c in 0..v {
                        next[b * v + c] += mass * self.prob(a, b, c);
                    }
                }
            }
            let change: f64 = next.iter().zip(&pi).map(|(x, y)| (x - y).abs()).sum();
            pi = next;
            if change < 1e-13 {
                break;
            }
        }
        let mut h = 0.0;
        for a in 0..v {
            for b in 0..v {
                let row = (0..v).map(|c| self.prob(a, b, c));
                let hc: f64 = row.filter(|p| *p > 0.0).map(|p| -p * p.ln()).sum();
                h += pi[a * v + b] * hc;
            }
        }
        h
    }

    /// Mean negative log-likelihood (nats/token) of `tokens[2..]` under this source: the loss
    /// a perfect model would score on that stream.
    pub fn nll(&self, tokens: &[u32]) -> f64 {
        let n = tokens.len().saturating_sub(2);
        let total: f64 = tokens
            .windows(3)
            .map(|w| -self.prob(w[0] as usize, w[1] as usize, w[2] as usize).ln())
            .sum();
        total / n.max(1) as f64
    }
}

/// Tokens split into training and validation streams.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// Tokenizer vocabulary (64 for the synthetic source, 256 for bytes).
    pub vocab: usize,
    /// Training tokens.
    pub train: Vec<u32>,
    /// Held-out validation tokens.
    pub valid: Vec<u32>,
    /// What the corpus is, for reports.
    pub description: String,
    /// The loss floor in nats/token where it is known: the synthetic source's entropy rate.
    pub entropy_rate: Option<f64>,
    /// The source's own loss on the validation stream where it is known.
    pub valid_floor: Option<f64>,
}

/// Synthetic-corpus parameters of the default run.
pub const SYNTHETIC_VOCAB: usize = 64;
const SYNTHETIC_BRANCHING: usize = 4;
const SYNTHETIC_NOISE: f64 = 0.02;

impl Corpus {
    /// The default corpus: `train_tokens` + `valid_tokens` from the order-2 Markov source
    /// ([`MarkovSource`], 64 symbols, 4 successors per context, 2 % noise) built from `seed`.
    pub fn synthetic(train_tokens: usize, valid_tokens: usize, seed: u64) -> Self {
        let source = MarkovSource::new(SYNTHETIC_VOCAB, SYNTHETIC_BRANCHING, SYNTHETIC_NOISE, seed);
        let stream = source.sample(train_tokens + valid_tokens, seed.wrapping_add(1));
        let valid = stream[train_tokens..].to_vec();
        let valid_floor = Some(source.nll(&valid));
        Self {
            vocab: SYNTHETIC_VOCAB,
            train: stream[..train_tokens].to_vec(),
            valid,
            description: format!(
                "synthetic order-2 Markov source (vocab {SYNTHETIC_VOCAB}, {SYNTHETIC_BRANCHING} successors, {}% noise, seed {seed})",
                SYNTHETIC_NOISE * 100.0
            ),
            entropy_rate: Some(source.entropy_rate()),
            valid_floor,
        }
    }

    /// A UTF-8 text file as bytes (vocabulary 256); the last `valid_fraction` is held out.
    /// Errors on a missing, empty, binary or non-UTF-8 file, or one too short for a window
    /// of `seq_len + 1` tokens in each split.
    pub fn from_text_file(
        path: &Path,
        valid_fraction: f64,
        seq_len: usize,
    ) -> Result<Self, PretrainError> {
        let data = |msg: String| PretrainError::Data(format!("{}: {msg}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| data(format!("cannot read it: {e}")))?;
        if bytes.is_empty() {
            return Err(data("the file is empty".into()));
        }
        if bytes.contains(&0) {
            return Err(data(
                "the file holds NUL bytes; it looks binary, not text".into(),
            ));
        }
        if let Err(e) = std::str::from_utf8(&bytes) {
            return Err(data(format!("not UTF-8 text ({e})")));
        }
        let split = ((bytes.len() as f64) * (1.0 - valid_fraction)).round() as usize;
        let need = seq_len + 1;
        if split < need || bytes.len() - split < need {
            return Err(data(format!(
                "{} bytes is too short: each split needs at least {need} (seq_len + 1)",
                bytes.len()
            )));
        }
        let tokens: Vec<u32> = bytes.iter().map(|&b| b as u32).collect();
        Ok(Self {
            vocab: 256,
            train: tokens[..split].to_vec(),
            valid: tokens[split..].to_vec(),
            description: format!("{} ({} bytes, byte-level)", path.display(), bytes.len()),
            entropy_rate: None,
            valid_floor: None,
        })
    }

    /// The dashed line of the loss plots: the source's own held-out loss, where known.
    pub fn plot_floor(&self) -> Option<(f64, &'static str)> {
        self.valid_floor
            .map(|f| (f, "loss floor: the source's own held-out loss"))
    }

    /// Training batch number `index` of a run seeded with `seed`: `batch` windows of
    /// `seq_len + 1` tokens at positions drawn from (seed, index), returned as inputs and
    /// next-token targets, each [batch, seq_len].
    pub fn train_batch(
        &self,
        seed: u64,
        index: u64,
        batch: usize,
        seq_len: usize,
        device: &Device,
    ) -> (Tensor<2, Int>, Tensor<2, Int>) {
        let mut rng = SplitMix::new(seed ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let starts: Vec<usize> = (0..batch)
            .map(|_| rng.below(self.train.len() - seq_len))
            .collect();
        windows(&self.train, &starts, seq_len, device)
    }

    /// Validation batches: consecutive non-overlapping windows from the start of the
    /// validation stream, at most `max_batches` batches of `batch` windows.
    pub fn valid_batches(
        &self,
        batch: usize,
        seq_len: usize,
        max_batches: usize,
        device: &Device,
    ) -> Vec<(Tensor<2, Int>, Tensor<2, Int>)> {
        let available = (self.valid.len() - 1) / seq_len;
        let starts: Vec<usize> = (0..available.min(batch * max_batches))
            .map(|i| i * seq_len)
            .collect();
        starts
            .chunks(batch)
            .map(|chunk| windows(&self.valid, chunk, seq_len, device))
            .collect()
    }
}

fn windows(
    tokens: &[u32],
    starts: &[usize],
    seq_len: usize,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let mut inputs = Vec::with_capacity(starts.len() * seq_len);
    let mut targets = Vec::with_capacity(starts.len() * seq_len);
    for &s in starts {
        inputs.extend(tokens[s..s + seq_len].iter().map(|&t| t as i64));
        targets.extend(tokens[s + 1..s + seq_len + 1].iter().map(|&t| t as i64));
    }
    let shape = [starts.len(), seq_len];
    (
        Tensor::from_data(TensorData::new(inputs, shape), device),
        Tensor::from_data(TensorData::new(targets, shape), device),
    )
}
