//! Learning-rate schedule: linear warmup to the peak, then a cosine decay to a floor.

/// Cosine schedule with linear warmup. The whole state is the step, so a checkpoint that
/// stores the step and this config resumes the schedule exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineWarmup {
    /// Peak learning rate, reached at the end of warmup.
    pub peak: f64,
    /// Final learning rate as a fraction of the peak.
    pub min_ratio: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// Total steps; the decay ends here.
    pub total: usize,
}

impl CosineWarmup {
    /// Learning rate of 0-based step `step`: `peak·(step+1)/warmup` during warmup, then
    /// `min + (peak − min)·(1 + cos(π·p))/2` with `p` the fraction of decay steps done.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let min = self.peak * self.min_ratio;
        let decay = self.total.saturating_sub(self.warmup).max(1) as f64;
        let p = ((step - self.warmup) as f64 / decay).min(1.0);
        min + (self.peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }
}
