//! Picking the device a run trains on, and reading how much memory it uses.

use burn::tensor::wgpu::{WgpuBackend, WgpuSetup};
use burn::tensor::{Device, DeviceKind};

use super::PretrainError;
use super::alloc::{heap_in_use, heap_peak, reset_heap_peak};

/// The device a run uses and how it was found.
#[derive(Clone, Debug)]
pub struct Picked {
    /// The Burn device (without autodiff).
    pub device: Device,
    /// What it is, for reports: the adapter's name, type and graphics API, or the CPU.
    pub description: String,
    /// Whether it is a wgpu device (memory then comes from its allocator).
    pub is_wgpu: bool,
}

/// Accepted `--device` values.
pub const DEVICE_HELP: &str = "auto (a wgpu GPU if there is one, else the CPU), cpu, wgpu (any wgpu adapter, software ones included), vulkan, metal, dx12, gl, discrete[:N], integrated[:N], software";

fn describe(setup: &WgpuSetup) -> String {
    let info = setup.adapter.get_info();
    format!(
        "{} ({:?}, {:?}, driver {} {})",
        info.name, info.device_type, info.backend, info.driver, info.driver_info
    )
}

fn wgpu(kind: DeviceKind, api: WgpuBackend) -> Result<Picked, String> {
    let (device, setup) = Device::wgpu_options()
        .device_kind(kind)
        .graphics_api(api)
        .init_with_setup()
        .map_err(|e| e.to_string())?;
    Ok(Picked {
        description: format!("wgpu: {}", describe(&setup)),
        device,
        is_wgpu: true,
    })
}

fn cpu(note: &str) -> Picked {
    Picked {
        device: Device::flex(),
        description: format!("CPU (Burn flex backend{note})"),
        is_wgpu: false,
    }
}

/// Pick a device from a `--device` value (see [`DEVICE_HELP`]). `auto` tries discrete,
/// integrated and virtual GPUs in that order and falls back to the CPU with a note on
/// stderr; software adapters such as Mesa's lavapipe are used only when asked for.
pub fn pick(spec: &str) -> Result<Picked, PretrainError> {
    let err = |e: String| PretrainError::Device(format!("--device {spec}: {e}"));
    let (name, index) = match spec.split_once(':') {
        Some((n, i)) => (
            n,
            Some(
                i.parse::<usize>()
                    .map_err(|_| err(format!("`{i}` is not an adapter index")))?,
            ),
        ),
        None => (spec, None),
    };
    let idx = index.unwrap_or(0);
    let auto = WgpuBackend::Auto;
    match name {
        "auto" => {
            for kind in [
                DeviceKind::DiscreteGpu(idx),
                DeviceKind::IntegratedGpu(idx),
                DeviceKind::VirtualGpu(idx),
            ] {
                if let Ok(p) = wgpu(kind, auto) {
                    return Ok(p);
                }
            }
            eprintln!(
                "note: no wgpu GPU adapter found, so training runs on the CPU (much slower). \
                 Software adapters such as Mesa's lavapipe are skipped; `--device software` uses one."
            );
            Ok(cpu(", no GPU adapter found"))
        }
        "cpu" => Ok(cpu("")),
        "wgpu" => wgpu(DeviceKind::DefaultDevice, auto).map_err(err),
        "vulkan" => wgpu(DeviceKind::DefaultDevice, WgpuBackend::Vulkan).map_err(err),
        "metal" => wgpu(DeviceKind::DefaultDevice, WgpuBackend::Metal).map_err(err),
        "dx12" => wgpu(DeviceKind::DefaultDevice, WgpuBackend::Dx12).map_err(err),
        "gl" => wgpu(DeviceKind::DefaultDevice, WgpuBackend::Gl).map_err(err),
        "discrete" => wgpu(DeviceKind::DiscreteGpu(idx), auto).map_err(err),
        "integrated" => wgpu(DeviceKind::IntegratedGpu(idx), auto).map_err(err),
        "software" => wgpu(DeviceKind::Cpu, auto).map_err(err),
        other => Err(err(format!("unknown device `{other}`; use {DEVICE_HELP}"))),
    }
}

/// Memory in use now, in bytes: on a wgpu device the bytes its memory pools reserve (live
/// tensors plus pages kept for reuse, so it also covers activations freed between steps); on the
/// CPU the heap bytes counted by [`CountingAlloc`](super::alloc::CountingAlloc) where it is
/// installed, else the process's resident set size (Linux). `None` where none is readable.
pub fn memory_in_use(device: &Device, is_wgpu: bool) -> Option<u64> {
    if is_wgpu {
        device.memory_pool_usage().map(|u| u.bytes_reserved)
    } else {
        heap_in_use().or_else(|| proc_status_kib("VmRSS:").map(|k| k * 1024))
    }
}

/// What [`memory_in_use`] and [`peak_memory`] measure on this device.
pub fn memory_kind(is_wgpu: bool) -> &'static str {
    match (is_wgpu, heap_in_use().is_some()) {
        (true, _) => "wgpu pool bytes reserved",
        (false, true) => "heap bytes in use",
        (false, false) => "process peak RSS",
    }
}

/// Start a new CPU peak-memory mark (no effect on wgpu, whose peak is sampled).
pub fn reset_peak() {
    reset_heap_peak();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak CPU memory since [`reset_peak`]: counted heap bytes where
/// [`CountingAlloc`](super::alloc::CountingAlloc) is installed, else peak RSS (Linux `VmHWM`). `None` on
/// wgpu devices.
pub fn peak_memory(is_wgpu: bool) -> Option<u64> {
    if is_wgpu {
        None
    } else {
        heap_peak().or_else(|| proc_status_kib("VmHWM:").map(|k| k * 1024))
    }
}

/// Memory the OS can still hand out, in bytes (Linux `MemAvailable`).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    field_kib(&text, "MemAvailable:").map(|k| k * 1024)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    field_kib(&text, field)
}

fn field_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
