//! What defines a run: the optimizer choice and [`TrainConfig`], with its validation and
//! the optimizer it builds.

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::ParamGroup;
use burn::optim::ModuleOptimizer;

use subtrack::{SubTrackConfig, SubTrackReport};

use super::PretrainError;
use super::data::Corpus;
use super::model::{LlamaConfig, PROJECTED_PARAMS};
use super::schedule::CosineWarmup;

/// The optimizers the job can train with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Burn's AdamW on every parameter.
    AdamW,
    /// GaLore (SVD refresh) on attention and MLP weights, AdamW elsewhere.
    GaLore,
    /// SubTrack-Grad (geodesic tracking) on attention and MLP weights, AdamW elsewhere.
    SubTrackGrad,
    /// SubTrack++ (tracking, projection-aware moments, recovery scaling), AdamW elsewhere.
    SubTrackPlusPlus,
}

impl OptimizerKind {
    /// All four, in the order `--compare` runs them.
    pub const ALL: [Self; 4] = [
        Self::AdamW,
        Self::GaLore,
        Self::SubTrackGrad,
        Self::SubTrackPlusPlus,
    ];

    /// Parse a command-line name: `adamw`, `galore`, `subtrack-grad`, `subtrack++`.
    pub fn parse(name: &str) -> Result<Self, PretrainError> {
        match name.to_ascii_lowercase().as_str() {
            "adamw" => Ok(Self::AdamW),
            "galore" => Ok(Self::GaLore),
            "subtrack-grad" | "subtrack_grad" | "subtrack" => Ok(Self::SubTrackGrad),
            "subtrack++" | "subtrack-plus-plus" | "subtrackpp" => Ok(Self::SubTrackPlusPlus),
            other => Err(PretrainError::invalid(format!(
                "unknown optimizer `{other}`; use adamw, galore, subtrack-grad or subtrack++"
            ))),
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::AdamW => "adamw",
            Self::GaLore => "galore",
            Self::SubTrackGrad => "subtrack-grad",
            Self::SubTrackPlusPlus => "subtrack++",
        }
    }

    /// The display name.
    pub fn label(self) -> &'static str {
        match self {
            Self::AdamW => "AdamW",
            Self::GaLore => "GaLore",
            Self::SubTrackGrad => "SubTrack-Grad",
            Self::SubTrackPlusPlus => "SubTrack++",
        }
    }

    /// The folder its runs go to inside an output directory (`subtrack++` as `subtrackpp`).
    pub fn dir_name(self) -> String {
        self.name().replace("++", "pp")
    }

    /// Whether it projects the attention and MLP weights (all but AdamW).
    pub fn is_low_rank(self) -> bool {
        self != Self::AdamW
    }

    /// The peak learning rate the job gives this optimizer when none is named: the best of
    /// the sweep recorded in `benches/RESULTS.md` ("Learning rates"). The low-rank ones
    /// scale their projected update by `scale` = 0.25, so they want a larger rate.
    pub fn default_lr(self) -> f64 {
        match self {
            Self::AdamW => 2e-3,
            Self::GaLore | Self::SubTrackGrad | Self::SubTrackPlusPlus => 3.2e-2,
        }
    }
}

/// The peak learning rate of each optimizer: its [`OptimizerKind::default_lr`] unless a
/// dense (AdamW) or a low-rank (GaLore, SubTrack-Grad, SubTrack++) rate is given.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LearningRates {
    /// AdamW's rate, where given.
    pub dense: Option<f64>,
    /// The low-rank optimizers' rate, where given.
    pub low_rank: Option<f64>,
}

impl LearningRates {
    /// One rate for every optimizer.
    pub fn uniform(lr: f64) -> Self {
        Self {
            dense: Some(lr),
            low_rank: Some(lr),
        }
    }

    /// The rate `kind` runs at.
    pub fn of(&self, kind: OptimizerKind) -> f64 {
        let given = if kind.is_low_rank() {
            self.low_rank
        } else {
            self.dense
        };
        given.unwrap_or_else(|| kind.default_lr())
    }
}

/// Everything that defines a run. Stored in each checkpoint; a resumed run must match it.
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    /// Model size preset (`9m` … `1b`, see [`LlamaConfig::preset`]).
    #[config(default = "String::from(\"9m\")")]
    pub size: String,
    /// `adamw`, `galore`, `subtrack-grad` or `subtrack++`.
    #[config(default = "String::from(\"subtrack++\")")]
    pub optimizer: String,
    /// Optimizer steps.
    #[config(default = 600)]
    pub steps: usize,
    /// Sequences per batch.
    #[config(default = 16)]
    pub batch_size: usize,
    /// Tokens per sequence.
    #[config(default = 128)]
    pub seq_len: usize,
    /// Peak learning rate. The command line fills in the optimizer's own
    /// ([`OptimizerKind::default_lr`]) where none is given.
    #[config(default = 2e-3)]
    pub lr: f64,
    /// Linear warmup steps.
    #[config(default = 50)]
    pub warmup_steps: usize,
    /// Final learning rate as a fraction of the peak.
    #[config(default = 0.1)]
    pub min_lr_ratio: f64,
    /// Global gradient-norm bound.
    #[config(default = 1.0)]
    pub grad_clip: f64,
    /// Decoupled weight decay (all optimizers).
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// Projection rank; `None` takes the size's GaLore rank ([`LlamaConfig::default_rank`]).
    #[config(default = "None")]
    pub rank: Option<usize>,
    /// Subspace update interval T (steps).
    #[config(default = 100)]
    pub update_interval: usize,
    /// Evaluate every this many steps (and at the start and the end).
    #[config(default = 50)]
    pub eval_every: usize,
    /// Validation batches per evaluation.
    #[config(default = 8)]
    pub eval_batches: usize,
    /// Write a checkpoint every this many steps (and at the end).
    #[config(default = 200)]
    pub checkpoint_every: usize,
    /// Log a CSV row and a progress line every this many steps.
    #[config(default = 10)]
    pub log_every: usize,
    /// Seed of the model initialisation, the synthetic corpus and the batch positions.
    #[config(default = 42)]
    pub seed: u64,
    /// A UTF-8 text file to train on instead of the synthetic corpus.
    #[config(default = "None")]
    pub data: Option<String>,
    /// Tokens of synthetic corpus (training + validation).
    #[config(default = 1_000_000)]
    pub synthetic_tokens: usize,
    /// Fraction of the corpus held out for validation.
    #[config(default = 0.1)]
    pub valid_fraction: f64,
    /// Run the WGSL kernels on wgpu (see [`SubTrackConfig::wgsl_kernels`]; on by default).
    #[config(default = true)]
    pub wgsl_kernels: bool,
    /// Run the fused CPU loops on `flex` (see [`SubTrackConfig::cpu_kernels`]; on by default).
    #[config(default = true)]
    pub cpu_kernels: bool,
}

impl TrainConfig {
    /// The optimizer this config names.
    pub fn optimizer_kind(&self) -> Result<OptimizerKind, PretrainError> {
        OptimizerKind::parse(&self.optimizer)
    }

    /// The model shape for a corpus of `vocab` symbols.
    pub fn model(&self, vocab: usize) -> Result<LlamaConfig, PretrainError> {
        let model = LlamaConfig::preset(&self.size, vocab)?.with_max_seq_len(self.seq_len.max(2));
        model.validate()?;
        Ok(model)
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), PretrainError> {
        let bad = |m: String| Err(PretrainError::invalid(m));
        self.optimizer_kind()?;
        LlamaConfig::preset(&self.size, 2)?;
        for (name, v) in [
            ("steps", self.steps),
            ("batch-size", self.batch_size),
            ("update-interval", self.update_interval),
            ("eval-every", self.eval_every),
            ("eval-batches", self.eval_batches),
            ("checkpoint-every", self.checkpoint_every),
            ("log-every", self.log_every),
        ] {
            if v == 0 {
                return bad(format!("--{name} must be at least 1"));
            }
        }
        if self.seq_len < 2 {
            return bad(format!(
                "--seq-len must be at least 2, got {}",
                self.seq_len
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be positive and finite, got {}", self.lr));
        }
        if self.warmup_steps > self.steps {
            return bad(format!(
                "--warmup-steps {} exceeds --steps {}",
                self.warmup_steps, self.steps
            ));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "--min-lr-ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return bad(format!(
                "--grad-clip must be positive and finite, got {}",
                self.grad_clip
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "--weight-decay must be ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.valid_fraction > 0.0 && self.valid_fraction <= 0.5) {
            return bad(format!(
                "--valid-fraction must be in (0, 0.5], got {}",
                self.valid_fraction
            ));
        }
        self.check_held_out()?;
        let model = LlamaConfig::preset(&self.size, 2)?;
        if let Some(r) = self.rank
            && (r == 0 || r >= model.hidden_size)
        {
            return bad(format!(
                "--rank {r} must be in 1..{} (below the model width)",
                model.hidden_size
            ));
        }
        Ok(())
    }

    /// On the synthetic corpus, whether its held-out part holds the 10 windows of
    /// seq-len + 1 tokens that evaluation takes; the refusal names `--seq-len` and both fixes.
    fn check_held_out(&self) -> Result<(), PretrainError> {
        let need = 10 * (self.seq_len + 1);
        let held_out = self.synthetic_tokens as f64 * self.valid_fraction;
        if self.data.is_none() && held_out < need as f64 {
            let enough = (need as f64 / self.valid_fraction).ceil();
            return Err(PretrainError::invalid(format!(
                "--seq-len {} needs {need} held-out tokens (10 windows of seq-len + 1), but the \
                 synthetic corpus holds {} ({} tokens × --valid-fraction {}): lower --seq-len \
                 to at most {}, or raise --synthetic-tokens to at least {enough}",
                self.seq_len,
                held_out as usize,
                self.synthetic_tokens,
                self.valid_fraction,
                (held_out as usize / 10).saturating_sub(1),
            )));
        }
        Ok(())
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> CosineWarmup {
        CosineWarmup {
            peak: self.lr,
            min_ratio: self.min_lr_ratio,
            warmup: self.warmup_steps,
            total: self.steps,
        }
    }

    /// The corpus this config trains on.
    pub fn corpus(&self) -> Result<Corpus, PretrainError> {
        match &self.data {
            Some(path) => {
                Corpus::from_text_file(Path::new(path), self.valid_fraction, self.seq_len)
            }
            None => {
                let valid = (self.synthetic_tokens as f64 * self.valid_fraction) as usize;
                Ok(Corpus::synthetic(
                    self.synthetic_tokens - valid,
                    valid,
                    self.seed,
                ))
            }
        }
    }

    /// The SubTrack configuration of the projected group (`None` for AdamW's runs it
    /// still supplies AdamW's hyper-parameters).
    pub fn subtrack(&self, model: &LlamaConfig) -> SubTrackConfig {
        let base = match self.optimizer_kind() {
            Ok(OptimizerKind::GaLore) => SubTrackConfig::galore(),
            Ok(OptimizerKind::SubTrackGrad) => SubTrackConfig::subtrack_grad(),
            _ => SubTrackConfig::subtrack_plus_plus(),
        };
        base.with_rank(self.rank.unwrap_or_else(|| model.default_rank()))
            .with_update_interval(self.update_interval)
            .with_weight_decay(self.weight_decay)
            .with_wgsl_kernels(self.wgsl_kernels)
            .with_cpu_kernels(self.cpu_kernels)
    }

    /// The optimizer: AdamW on everything, or the SubTrack/GaLore group on
    /// [`PROJECTED_PARAMS`] with AdamW (same betas, ε and decay) on the rest; with the
    /// group's counters (`None` for AdamW).
    pub fn build_optimizer(
        &self,
        model: &LlamaConfig,
    ) -> Result<(ModuleOptimizer, Option<SubTrackReport>), PretrainError> {
        let config = self.subtrack(model);
        let err = |e: subtrack::SubTrackError| PretrainError::invalid(e.to_string());
        let adamw = ModuleOptimizer::from(config.adamw().map_err(err)?);
        Ok(match self.optimizer_kind()? {
            OptimizerKind::AdamW => (adamw, None),
            _ => {
                let subtrack = config.build().map_err(err)?;
                let report = subtrack.report();
                let group = ParamGroup::from_regex(PROJECTED_PARAMS).expect("valid regex");
                (adamw.with_group(group, subtrack, None), Some(report))
            }
        })
    }
}

/// Output directory for `--out` left unset.
pub fn default_out_dir(compare: bool, kind: OptimizerKind) -> PathBuf {
    if compare {
        PathBuf::from("runs/compare")
    } else {
        PathBuf::from("runs").join(kind.dir_name())
    }
}
