//! [`SubTrackReport`]: what an optimizer's steps did (skips, subspace updates,
//! re-orthonormalisations, read-backs), counted on the host and, where the step ran on the
//! device, in device-side totals read only when asked; and, where turned on, the subspace
//! diagnostics ([`SubspaceDiagnostics`]), likewise read only when asked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use burn::tensor::Tensor;

use crate::diagnostics::{Probe, SubspaceDiagnostics};
use crate::host;

/// Counters shared by every clone of one [`SubTrack`](crate::SubTrack); cheap to clone and read at any time.
#[derive(Clone, Debug, Default)]
pub struct SubTrackReport {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    nonfinite_skips: AtomicU64,
    subspace_updates: AtomicU64,
    reorthonormalizations: AtomicU64,
    host_reads: AtomicU64,
    device_skips_logged: AtomicBool,
    /// Skips decided on the device; read when [`SubTrackReport::nonfinite_skips`] is called.
    device_skips: DeviceCount,
    /// Re-orthonormalisations decided on the device.
    device_reorthonormalizations: DeviceCount,
    /// Whether the steps form subspace diagnostics.
    diagnose: AtomicBool,
    /// Diagnostics formed and not yet taken, on their devices, in the order formed.
    probes: Mutex<Vec<Probe>>,
}

/// A count kept on the devices, one running total (\[1\], f32) per device, so that adding to
/// it reads nothing back; [`DeviceCount::read`] does.
#[derive(Debug, Default)]
struct DeviceCount {
    totals: Mutex<Vec<Tensor<1>>>,
}

impl DeviceCount {
    /// Add `amount` (\[1\], on its device) to the running total of its device.
    fn add(&self, amount: &Tensor<1>) {
        let device = amount.device();
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        match totals.iter_mut().find(|c| c.device() == device) {
            Some(total) => *total = total.clone() + amount.clone(),
            None => totals.push(amount.clone()),
        }
    }

    /// The sum over devices (one read-back per device).
    fn read(&self) -> u64 {
        let totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        totals
            .iter()
            .map(|t| host::read_scalar(t.clone()).round() as u64)
            .sum()
    }
}

impl SubTrackReport {
    /// Parameter steps skipped because the gradient held NaN or ±∞. Where the check ran on
    /// the device (see [`SubTrack`](crate::SubTrack)'s `step`) this reads the device-side counts back, and
    /// logs a warning the first time they are non-zero.
    pub fn nonfinite_skips(&self) -> u64 {
        let host = self.inner.nonfinite_skips.load(Ordering::Relaxed);
        let device = self.inner.device_skips.read();
        if device > 0 && !self.inner.device_skips_logged.swap(true, Ordering::Relaxed) {
            log::warn!(
                "SubTrack: {device} parameter steps were skipped on the device for non-finite gradients"
            );
        }
        host + device
    }

    /// Transfers from the device to the host that this optimizer's steps waited on: the
    /// finite checks on the host and the subspace updates' small matrices. Zero growth
    /// between two subspace updates means the per-step path is free of read-backs.
    pub fn host_reads(&self) -> u64 {
        self.inner.host_reads.load(Ordering::Relaxed)
    }

    /// Add 1 − `flag` to the device-side skip count.
    pub(crate) fn count_device_skips(&self, flag: &Tensor<1>) {
        let skipped = flag.clone().neg().add_scalar(1.0);
        self.inner.device_skips.add(&skipped);
    }

    /// Subspace updates (geodesic steps or SVD refreshes) performed, initial bases excluded.
    pub fn subspace_updates(&self) -> u64 {
        self.inner.subspace_updates.load(Ordering::Relaxed)
    }

    /// Geodesic steps whose basis drifted past the tolerance and was re-orthonormalised
    /// (reads the device-side count back where the tracking step ran as kernels).
    pub fn reorthonormalizations(&self) -> u64 {
        self.inner.reorthonormalizations.load(Ordering::Relaxed)
            + self.inner.device_reorthonormalizations.read()
    }

    /// Turn the subspace diagnostics on or off for every clone of this optimizer (off by
    /// default). While on, each subspace update of a projected matrix also forms its
    /// [`SubspaceDiagnostics`] on the device: two extra products over G (a×b×r) and a few
    /// over S (a×r×r), and no read-back in the step.
    pub fn set_subspace_diagnostics(&self, on: bool) {
        self.inner.diagnose.store(on, Ordering::Relaxed);
    }

    /// Whether the subspace diagnostics are on.
    pub fn subspace_diagnostics(&self) -> bool {
        self.inner.diagnose.load(Ordering::Relaxed)
    }

    /// The diagnostics of the subspace updates since the last call, in the order they ran
    /// (one read-back per update; empty while the diagnostics are off).
    pub fn take_subspace_diagnostics(&self) -> Vec<SubspaceDiagnostics> {
        let probes = {
            let mut probes = self.inner.probes.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *probes)
        };
        probes.into_iter().map(Probe::read).collect()
    }

    /// Keep one update's diagnostics until they are taken.
    pub(crate) fn push_probe(&self, probe: Probe) {
        let mut probes = self.inner.probes.lock().unwrap_or_else(|e| e.into_inner());
        probes.push(probe);
    }

    /// Count a step skipped on the host for a non-finite gradient.
    pub(crate) fn count_host_skip(&self) {
        self.inner.nonfinite_skips.fetch_add(1, Ordering::Relaxed);
    }

    /// Count `reads` read-backs a step waited on.
    pub(crate) fn count_host_reads(&self, reads: u64) {
        self.inner.host_reads.fetch_add(reads, Ordering::Relaxed);
    }

    /// Count a subspace update.
    pub(crate) fn count_subspace_update(&self) {
        self.inner.subspace_updates.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a re-orthonormalisation decided on the host.
    pub(crate) fn count_reorthonormalization(&self) {
        self.inner
            .reorthonormalizations
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Add the device's re-orthonormalisation flag (\[1\]: 1 where it ran) to its count.
    pub(crate) fn count_device_reorthonormalizations(&self, status: &Tensor<1>) {
        self.inner.device_reorthonormalizations.add(status);
    }
}
