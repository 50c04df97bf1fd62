//! [`Meter`]: a run's wall time, training time and tokens, and peak memory.

use std::time::Instant;

use burn::tensor::Device;

use super::device;

/// Time, tokens and memory of one invocation of a run. Training time counts only the
/// steps ([`Meter::step`]); evaluation, sampling and checkpoints count toward the wall time
/// alone.
pub(crate) struct Meter {
    device: Device,
    is_wgpu: bool,
    started: Instant,
    interval_start: Instant,
    interval_tokens: u64,
    train_seconds: f64,
    trained_tokens: u64,
    peak_memory: Option<u64>,
}

impl Meter {
    /// Start metering the run on `device` (a wgpu device where `is_wgpu`): the clocks
    /// start, and the peak memory starts at what is in use now.
    pub fn start(device: &Device, is_wgpu: bool) -> Self {
        device::reset_peak();
        let now = Instant::now();
        Meter {
            device: device.clone(),
            is_wgpu,
            started: now,
            interval_start: now,
            interval_tokens: 0,
            train_seconds: 0.0,
            trained_tokens: 0,
            peak_memory: device::memory_in_use(device, is_wgpu),
        }
    }

    /// Run one training step of `tokens` tokens, timed; then sample the memory in use.
    pub fn step<T>(&mut self, tokens: u64, step: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = step();
        self.train_seconds += start.elapsed().as_secs_f64();
        self.trained_tokens += tokens;
        self.interval_tokens += tokens;
        out
    }

    /// The memory in use now (where readable), kept in the peak.
    pub fn memory(&mut self) -> Option<u64> {
        let memory = device::memory_in_use(&self.device, self.is_wgpu);
        self.peak_memory = self.peak_memory.max(memory);
        memory
    }

    /// Training tokens per second over the interval since [`new_interval`](Self::new_interval)
    /// (or the start), wall time included.
    pub fn interval_rate(&self) -> f64 {
        let secs = self.interval_start.elapsed().as_secs_f64().max(1e-9);
        self.interval_tokens as f64 / secs
    }

    /// Start a new interval for [`interval_rate`](Self::interval_rate).
    pub fn new_interval(&mut self) {
        self.interval_start = Instant::now();
        self.interval_tokens = 0;
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Training tokens per second over the timed steps.
    pub fn tokens_per_s(&self) -> f64 {
        self.trained_tokens as f64 / self.train_seconds.max(1e-9)
    }

    /// The peak memory seen, the device's own peak included.
    pub fn peak(&self) -> Option<u64> {
        self.peak_memory.max(device::peak_memory(self.is_wgpu))
    }
}
