//! Picking the device a run trains on, and reading how much memory it uses.
//!
//! The WGSL route runs on wgpu's Vulkan, Metal and DX12 backends ([`supported_apis`]).
//! wgpu's OpenGL backend is never chosen: under Burn's device and fusion threads its adapter
//! lock times out (wgpu-hal panics with "Could not lock adapter context") and the process
//! waits forever. An OpenGL adapter is named as passed over instead ([`passed_over`]).

use std::fmt::Write as _;

use burn::tensor::wgpu::{WgpuBackend, WgpuSetup, wgpu as wgpu_api};
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
pub const DEVICE_HELP: &str = "auto (a wgpu GPU if there is one, else the CPU), cpu, wgpu (any Vulkan, Metal or DX12 adapter, software ones included), vulkan, metal, dx12, discrete[:N], integrated[:N], software; gl is refused (wgpu's OpenGL backend deadlocks under Burn)";

/// Why an OpenGL adapter is never used.
pub const GL_UNSUPPORTED: &str = "wgpu's OpenGL backend is not supported: under Burn's threads \
     its adapter lock times out (wgpu-hal: \"Could not lock adapter context\") and the run \
     never ends. Use a Vulkan, Metal or DX12 adapter (on Linux without a GPU, Mesa's lavapipe: \
     the mesa-vulkan-drivers package) or --device cpu";

/// The graphics APIs wgpu devices are opened on, in the order they are tried on this
/// platform: Metal on Apple systems, Vulkan then DX12 on Windows, Vulkan elsewhere. wgpu's
/// OpenGL backend is not among them (see the module docs).
pub fn supported_apis() -> &'static [WgpuBackend] {
    if cfg!(any(target_os = "macos", target_os = "ios")) {
        &[WgpuBackend::Metal]
    } else if cfg!(windows) {
        &[WgpuBackend::Vulkan, WgpuBackend::Dx12]
    } else {
        &[WgpuBackend::Vulkan]
    }
}

fn describe(info: &wgpu_api::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}, driver {} {})",
        info.name, info.device_type, info.backend, info.driver, info.driver_info
    )
}

fn wgpu(kind: DeviceKind, api: WgpuBackend) -> Result<Picked, String> {
    let (device, setup): (Device, WgpuSetup) = Device::wgpu_options()
        .device_kind(kind)
        .graphics_api(api)
        .init_with_setup()
        .map_err(|e| format!("{api:?}: {e}"))?;
    Ok(Picked {
        description: format!("wgpu: {}", describe(&setup.adapter.get_info())),
        device,
        is_wgpu: true,
    })
}

/// A wgpu device of `kind` on the first of [`supported_apis`] that has one, or what each
/// API answered.
fn open_supported(kind: &DeviceKind) -> Result<Picked, Vec<String>> {
    let mut answers = Vec::new();
    for &api in supported_apis() {
        match wgpu(kind.clone(), api) {
            Ok(p) => return Ok(p),
            Err(e) => answers.push(e),
        }
    }
    Err(answers)
}

/// Open a wgpu device of `kind` on the first of [`supported_apis`] that has one. The error
/// says what each API answered and names any adapter passed over ([`passed_over`]).
pub fn wgpu_adapter(kind: DeviceKind) -> Result<Picked, String> {
    let answers = match open_supported(&kind) {
        Ok(p) => return Ok(p),
        Err(answers) => answers,
    };
    let apis: Vec<String> = supported_apis().iter().map(|a| format!("{a:?}")).collect();
    let mut why = format!(
        "no {} on {} ({})",
        kind_name(&kind),
        apis.join(" or "),
        answers.join("; ")
    );
    for skipped in passed_over() {
        let _ = write!(why, "; passed over {skipped}");
    }
    Err(why)
}

fn kind_name(kind: &DeviceKind) -> String {
    match kind {
        DeviceKind::DiscreteGpu(i) => format!("discrete GPU {i}"),
        DeviceKind::IntegratedGpu(i) => format!("integrated GPU {i}"),
        DeviceKind::VirtualGpu(i) => format!("virtual GPU {i}"),
        DeviceKind::Cpu => "software adapter".into(),
        DeviceKind::DefaultDevice => "wgpu adapter".into(),
        other => format!("{other:?} adapter"),
    }
}

/// The adapters of wgpu's OpenGL backend on this machine, each described with the reason it
/// is not used. Only lists them: no device is opened.
pub fn passed_over() -> Vec<String> {
    gl_adapters()
        .into_iter()
        .map(|a| format!("{a}: {GL_UNSUPPORTED}"))
        .collect()
}

/// The adapters of wgpu's OpenGL backend, described; no device is opened.
fn gl_adapters() -> Vec<String> {
    let backends = wgpu_api::Backends::GL;
    let instance = wgpu_api::Instance::new(wgpu_api::InstanceDescriptor {
        backends,
        ..wgpu_api::InstanceDescriptor::new_without_display_handle()
    });
    // Native adapter enumeration completes when first polled.
    let mut listing = std::pin::pin!(instance.enumerate_adapters(backends));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match listing.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(adapters) => {
            adapters.iter().map(|a| describe(&a.get_info())).collect()
        }
        std::task::Poll::Pending => Vec::new(),
    }
}

fn cpu(note: &str) -> Picked {
    Picked {
        device: Device::flex(),
        description: format!("CPU (Burn flex backend{note})"),
        is_wgpu: false,
    }
}

/// Pick a device from a `--device` value (see [`DEVICE_HELP`]). `auto` tries discrete,
/// integrated and virtual GPUs in that order, on [`supported_apis`] only, and falls back to
/// the CPU with a note on stderr; software adapters such as Mesa's lavapipe are used only
/// when asked for. `gl` is refused with the reason ([`GL_UNSUPPORTED`]), naming the OpenGL
/// adapters it would have used.
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
    let pinned = |api: WgpuBackend| wgpu(DeviceKind::DefaultDevice, api).map_err(err);
    match name {
        "auto" => {
            for kind in [
                DeviceKind::DiscreteGpu(idx),
                DeviceKind::IntegratedGpu(idx),
                DeviceKind::VirtualGpu(idx),
            ] {
                // No error message is built here, so OpenGL is not even enumerated.
                if let Ok(p) = open_supported(&kind) {
                    return Ok(p);
                }
            }
            eprintln!(
                "note: no Vulkan, Metal or DX12 GPU adapter found, so training runs on the CPU \
                 (much slower). Software adapters such as Mesa's lavapipe are skipped; \
                 `--device software` uses one."
            );
            Ok(cpu(", no GPU adapter found"))
        }
        "cpu" => Ok(cpu("")),
        "wgpu" => wgpu_adapter(DeviceKind::DefaultDevice).map_err(err),
        "vulkan" => pinned(WgpuBackend::Vulkan),
        "metal" => pinned(WgpuBackend::Metal),
        "dx12" => pinned(WgpuBackend::Dx12),
        "gl" => {
            let adapters = gl_adapters();
            let found = if adapters.is_empty() {
                "this machine has no OpenGL adapter either".to_string()
            } else {
                format!("passed over: {}", adapters.join(", "))
            };
            Err(err(format!("{GL_UNSUPPORTED} ({found})")))
        }
        "discrete" => wgpu_adapter(DeviceKind::DiscreteGpu(idx)).map_err(err),
        "integrated" => wgpu_adapter(DeviceKind::IntegratedGpu(idx)).map_err(err),
        "software" => wgpu_adapter(DeviceKind::Cpu).map_err(err),
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
