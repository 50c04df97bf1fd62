//! Text from a model trained on bytes: temperature and top-k sampling from a seed, the
//! samples the training loop prints at each evaluation, and `pretrain_llama generate`'s
//! continuation of a prompt from a run's checkpoint.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use subtrack::testing::rng::SplitMix;

use super::PretrainError;
use super::ckpt::Checkpoint;
use super::config::TrainConfig;
use super::model::Llama;

/// How tokens are drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Tokens (bytes) to draw.
    pub length: usize,
    /// Softmax temperature: logits are divided by it (> 0; small values approach greedy).
    pub temperature: f64,
    /// Draw only among the `top_k` likeliest tokens (`None`: all of them).
    pub top_k: Option<usize>,
    /// Seed of the draws: the same seed, model and prompt give the same text.
    pub seed: u64,
}

impl Sampling {
    /// The samples printed at each evaluation: 160 bytes at temperature 0.8 over all tokens.
    pub fn during_training(seed: u64) -> Self {
        Sampling {
            length: 160,
            temperature: 0.8,
            top_k: None,
            seed,
        }
    }

    /// A clear error for a length of 0, a temperature that is not a positive finite number,
    /// or a top-k of 0.
    pub fn validate(&self) -> Result<(), PretrainError> {
        if self.length == 0 {
            return Err(PretrainError::invalid("--length must be at least 1"));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(PretrainError::invalid(format!(
                "--temperature must be a positive number, not {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(PretrainError::invalid("--top-k must be at least 1"));
        }
        Ok(())
    }
}

/// `sampling.length` tokens continuing `prompt` (not empty), each drawn from the model's
/// next-token distribution over the last `window` tokens.
pub fn continue_tokens(
    model: &Llama,
    prompt: &[u32],
    window: usize,
    sampling: &Sampling,
    device: &Device,
) -> Vec<u32> {
    assert!(!prompt.is_empty(), "a prompt of at least one token");
    let mut rng = SplitMix::new(sampling.seed);
    let mut tokens = prompt.to_vec();
    for _ in 0..sampling.length {
        let context = &tokens[tokens.len().saturating_sub(window.max(1))..];
        let ids: Vec<i64> = context.iter().map(|&t| i64::from(t)).collect();
        let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, context.len()]), device);
        let logits = model.forward(input);
        let [_, t, vocab] = logits.dims();
        let last = logits
            .slice([0..1, t - 1..t, 0..vocab])
            .reshape([vocab])
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 logits");
        tokens.push(draw(&last, sampling, &mut rng));
    }
    tokens.split_off(prompt.len())
}

/// One token from `logits` (one per token id) by `sampling`'s temperature and top-k, with
/// one uniform draw from `rng`.
pub fn draw(logits: &[f32], sampling: &Sampling, rng: &mut SplitMix) -> u32 {
    // Likeliest first; ties by token id, so the order never depends on the sort.
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&i, &j| logits[j].total_cmp(&logits[i]).then(i.cmp(&j)));
    order.truncate(sampling.top_k.unwrap_or(order.len()).max(1));
    let top = f64::from(logits[order[0]]);
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((f64::from(logits[i]) - top) / sampling.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.next_f64() * total;
    for (&i, w) in order.iter().zip(&weights) {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    order[order.len() - 1] as u32
}

/// Bytes as text a terminal shows as it is: invalid UTF-8 as U+FFFD, control characters
/// (newlines, tabs, escape sequences) as Rust escapes such as `\n` and `\u{1b}`.
pub fn escape(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// [`escape`] with newlines and tabs kept as they are: for printing a continuation.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The continuation of `prompt` (bytes, not empty) by the model of the run in `dir`, on
/// `device`: `pretrain_llama generate`. The context is the run's sequence length.
pub fn generate(
    dir: &Path,
    prompt: &[u8],
    sampling: &Sampling,
    device: &Device,
) -> Result<Vec<u8>, PretrainError> {
    sampling.validate()?;
    if prompt.is_empty() {
        return Err(PretrainError::invalid(
            "an empty prompt: give --prompt TEXT or text on stdin",
        ));
    }
    let (model, config) = load_run(dir, device)?;
    let prompt: Vec<u32> = prompt.iter().map(|&b| u32::from(b)).collect();
    let tokens = continue_tokens(&model, &prompt, config.seq_len, sampling, device);
    Ok(token_bytes(&tokens))
}

/// Byte tokens of `text`.
pub fn byte_tokens(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

/// Tokens back to bytes (tokens past 255 cannot come from a byte-level model).
pub fn token_bytes(tokens: &[u32]) -> Vec<u8> {
    tokens.iter().map(|&t| t.min(255) as u8).collect()
}

/// A run's model and config, loaded from `dir/checkpoint.bin` onto `device`: the model is
/// rebuilt from the run's config and the saved record loaded into it. A missing, corrupt or
/// foreign checkpoint, or one from a run on the synthetic corpus (whose tokens are not
/// text), is a clear error.
pub fn load_run(dir: &Path, device: &Device) -> Result<(Llama, TrainConfig), PretrainError> {
    let path = dir.join("checkpoint.bin");
    if !path.exists() {
        return Err(PretrainError::Checkpoint(format!(
            "{} does not exist: train a run with --out {} first",
            path.display(),
            dir.display()
        )));
    }
    let ckpt = Checkpoint::load(&path)?;
    let config = TrainConfig::load_binary(ckpt.config_json.as_bytes()).map_err(|e| {
        PretrainError::Checkpoint(format!("{}: unreadable config: {e}", path.display()))
    })?;
    if config.data.is_none() {
        return Err(PretrainError::invalid(format!(
            "{} trained on the synthetic corpus, whose tokens are not text; generate continues \
             runs trained with --data FILE",
            path.display()
        )));
    }
    let model_config = config.model(256)?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(ckpt.model))
        .map_err(|e| PretrainError::Checkpoint(format!("model record: {e}")))?;
    let model = model_config
        .init_seeded(device, config.seed)?
        .try_load_record(record)
        .map_err(|e| PretrainError::Checkpoint(format!("model record does not fit: {e}")))?;
    Ok((model, config))
}
