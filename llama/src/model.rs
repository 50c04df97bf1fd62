//! A small LLaMA: token embedding, pre-norm blocks of causal multi-head attention with
//! rotary position embeddings and a SwiGLU MLP, a final RMSNorm and an untied LM head.
//!
//! Parameter paths follow the paper's routing: `layers.{i}.attention.{wq,wk,wv,wo}.weight`
//! and `layers.{i}.mlp.{gate,up,down}.weight` are the projected matrices (see
//! [`PROJECTED_PARAMS`]); `embedding`, `head` and the norms use AdamW.

use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig,
    RotaryEncoding, RotaryEncodingConfig,
};
use burn::tensor::activation::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::PretrainError;

/// Regex over parameter paths that selects the attention and MLP weights, the matrices the
/// paper projects. Use it with `ParamGroup::from_regex`.
pub const PROJECTED_PARAMS: &str = r"^layers\.\d+\.(attention|mlp)\..*weight$";

/// Model shape. The presets mirror GaLore's `llama_*m` configs except for the vocabulary,
/// which is the tokenizer's (64 symbols for the synthetic corpus, 256 for bytes).
#[derive(Config, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size (tokens).
    pub vocab_size: usize,
    /// Width of the residual stream, `d_model`.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP's hidden layer.
    pub intermediate_size: usize,
    /// Attention heads; must divide `hidden_size` into an even head width.
    pub num_heads: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Longest sequence the rotary table covers (tokens).
    #[config(default = 1024)]
    pub max_seq_len: usize,
    /// RMSNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Standard deviation of the normal weight initialisation (GaLore uses 0.02).
    #[config(default = 0.02)]
    pub init_std: f64,
}

/// GaLore's model sizes by name, and `tiny` (width 64, 2 layers) for tests and smoke runs.
pub const PRESETS: [&str; 8] = ["tiny", "9m", "20m", "35m", "60m", "130m", "350m", "1b"];

impl LlamaConfig {
    /// The preset named `name` (`tiny`, `9m`, `20m`, `35m`, `60m`, `130m`, `350m`, `1b`; a leading
    /// `llama_` is accepted) with the given vocabulary.
    pub fn preset(name: &str, vocab_size: usize) -> Result<Self, PretrainError> {
        let name = name.trim_start_matches("llama_");
        let (hidden, inter, heads, layers) = match name {
            "tiny" => (64, 176, 4, 2),
            "9m" => (128, 352, 4, 4),
            "20m" => (256, 688, 4, 4),
            "35m" => (384, 1024, 8, 6),
            "60m" => (512, 1376, 8, 8),
            "130m" => (768, 2048, 12, 12),
            "350m" => (1024, 2736, 16, 24),
            "1b" => (2048, 5461, 32, 24),
            other => {
                return Err(PretrainError::invalid(format!(
                    "unknown model size `{other}`; use one of {}",
                    PRESETS.join(", ")
                )));
            }
        };
        Ok(Self::new(vocab_size, hidden, inter, heads, layers))
    }

    /// The SubTrack rank GaLore pairs with this width: 128 at 512, 256 at 768 and 1024,
    /// 512 at 2048, and a quarter of the width below 512.
    pub fn default_rank(&self) -> usize {
        match self.hidden_size {
            h if h >= 2048 => 512,
            h if h >= 768 => 256,
            h => (h / 4).max(1),
        }
    }

    /// Check that the shape can be built.
    pub fn validate(&self) -> Result<(), PretrainError> {
        let bad = |what: String| Err(PretrainError::invalid(what));
        if self.vocab_size < 2 {
            return bad(format!(
                "vocab_size must be at least 2, got {}",
                self.vocab_size
            ));
        }
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_heads", self.num_heads),
            ("num_layers", self.num_layers),
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_heads)
            || !(self.hidden_size / self.num_heads).is_multiple_of(2)
        {
            return bad(format!(
                "hidden_size {} must split into {} heads of even width (rotary embeddings rotate pairs)",
                self.hidden_size, self.num_heads
            ));
        }
        if !(self.norm_eps > 0.0 && self.init_std > 0.0 && self.init_std.is_finite()) {
            return bad("norm_eps and init_std must be positive".into());
        }
        Ok(())
    }

    /// Trainable parameter count.
    pub fn num_params(&self) -> usize {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let block = 4 * d * d + 3 * d * f + 2 * d;
        2 * v * d + self.num_layers * block + d
    }

    /// [`init`](Self::init), then every weight matrix (the linear layers and the embedding,
    /// all N(0, init_std)) drawn again from a host generator seeded by `seed`: the initial
    /// weights depend on the seed alone, not on Burn's process-wide random generator
    /// (which other threads may draw from) nor on the backend.
    pub fn init_seeded(&self, device: &Device, seed: u64) -> Result<Llama, PretrainError> {
        let model = self.init(device)?;
        Ok(model.map(&mut SeededNormal {
            seed,
            index: 0,
            std: self.init_std,
        }))
    }

    /// Build the model on `device` (random init from the device's generator; see
    /// [`init_seeded`](Self::init_seeded) for initial weights that depend on a seed alone).
    pub fn init(&self, device: &Device) -> Result<Llama, PretrainError> {
        self.validate()?;
        let normal = Initializer::Normal {
            mean: 0.0,
            std: self.init_std,
        };
        let linear = |i: usize, o: usize| {
            LinearConfig::new(i, o)
                .with_bias(false)
                .with_initializer(normal.clone())
                .init(device)
        };
        let d = self.hidden_size;
        let head_dim = d / self.num_heads;
        let layers = (0..self.num_layers)
            .map(|_| Block {
                attention_norm: RmsNormConfig::new(d)
                    .with_epsilon(self.norm_eps)
                    .init(device),
                attention: Attention {
                    wq: linear(d, d),
                    wk: linear(d, d),
                    wv: linear(d, d),
                    wo: linear(d, d),
                    num_heads: self.num_heads,
                },
                mlp_norm: RmsNormConfig::new(d)
                    .with_epsilon(self.norm_eps)
                    .init(device),
                mlp: Mlp {
                    gate: linear(d, self.intermediate_size),
                    up: linear(d, self.intermediate_size),
                    down: linear(self.intermediate_size, d),
                },
            })
            .collect();
        Ok(Llama {
            embedding: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(normal.clone())
                .init(device),
            layers,
            norm: RmsNormConfig::new(d)
                .with_epsilon(self.norm_eps)
                .init(device),
            head: linear(d, self.vocab_size),
            rope: RotaryEncodingConfig::new(self.max_seq_len, head_dim).init(device),
        })
    }
}

/// Replaces each 2-D parameter, in the module's traversal order, by N(0, std) values from
/// the host generator seeded by (seed, its index).
struct SeededNormal {
    seed: u64,
    index: u64,
    std: f64,
}

impl ModuleMapper for SeededNormal {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 2 {
            return param;
        }
        let seed = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(self.index);
        self.index += 1;
        let std = self.std;
        param.map(|tensor| {
            let shape = tensor.shape();
            let values: Vec<f32> = subtrack::testing::rng::gaussian(shape.num_elements(), seed)
                .into_iter()
                .map(|x| (x * std) as f32)
                .collect();
            let fresh = Tensor::from_data(TensorData::new(values, shape), &tensor.device());
            if tensor.is_require_grad() {
                fresh.require_grad()
            } else {
                fresh
            }
        })
    }
}

/// Causal multi-head self-attention with rotary position embeddings.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection, d×d.
    pub wq: Linear,
    /// Key projection, d×d.
    pub wk: Linear,
    /// Value projection, d×d.
    pub wv: Linear,
    /// Output projection, d×d.
    pub wo: Linear,
    num_heads: usize,
}

impl Attention {
    /// `x`: [batch, seq, d] → [batch, seq, d].
    fn forward(&self, x: Tensor<3>, rope: &RotaryEncoding) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let h = self.num_heads;
        let heads = |y: Tensor<3>| y.reshape([b, t, h, d / h]).swap_dims(1, 2);
        let q = rope.forward(heads(self.wq.forward(x.clone())));
        let k = rope.forward(heads(self.wk.forward(x.clone())));
        let v = heads(self.wv.forward(x));
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: true,
        };
        let y = attention(q, k, v, None, None, options);
        self.wo.forward(y.swap_dims(1, 2).reshape([b, t, d]))
    }
}

/// SwiGLU MLP: down(silu(gate·x) ⊙ up·x).
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection, d×f.
    pub gate: Linear,
    /// Up projection, d×f.
    pub up: Linear,
    /// Down projection, f×d.
    pub down: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.down
            .forward(silu(self.gate.forward(x.clone())) * self.up.forward(x))
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    /// Norm before attention.
    pub attention_norm: RmsNorm,
    /// Causal self-attention.
    pub attention: Attention,
    /// Norm before the MLP.
    pub mlp_norm: RmsNorm,
    /// SwiGLU MLP.
    pub mlp: Mlp,
}

/// The model.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embedding, vocab×d.
    pub embedding: Embedding,
    /// Transformer blocks.
    pub layers: Vec<Block>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
    /// Untied LM head, d×vocab.
    pub head: Linear,
    rope: RotaryEncoding,
}

impl Llama {
    /// Next-token logits: tokens [batch, seq] → [batch, seq, vocab].
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let mut x = self.embedding.forward(tokens);
        for block in &self.layers {
            x = x.clone()
                + block
                    .attention
                    .forward(block.attention_norm.forward(x), &self.rope);
            x = x.clone() + block.mlp.forward(block.mlp_norm.forward(x));
        }
        self.head.forward(self.norm.forward(x))
    }

    /// Mean next-token cross-entropy (nats/token) of `inputs` [batch, seq] against `targets`
    /// [batch, seq]; a scalar tensor.
    pub fn loss(&self, inputs: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        let logits = self.forward(inputs);
        let [b, t, v] = logits.dims();
        let log_probs = burn::tensor::activation::log_softmax(logits.reshape([b * t, v]), 1);
        let picked = log_probs.gather(1, targets.reshape([b * t, 1]));
        picked.mean().neg()
    }
}
