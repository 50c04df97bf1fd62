//! The adapter's limits: every kernel expansion fits WebGPU's defaults and translates to
//! SPIR-V, MSL and HLSL (the path wgpu takes to Vulkan, Metal and DX12); on a device opened
//! at WebGPU's default limits the route runs; under smaller limits each operation whose
//! shader does not fit takes the portable path instead, and the step still matches it.

use std::collections::BTreeSet;

use burn::tensor::Device;
use burn::tensor::wgpu::{WgpuSetup, wgpu as wgpu_api};
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use subtrack::SubTrackConfig;
use subtrack::testing::kernels::{self, Limits, shader_expansions};
use subtrack::testing::route::{self, RouteRequest, Sizes};

use crate::reference::Rng;
use crate::{assert_close, download, upload, wgpu_device, wgpu_required};

/// What one WGSL module binds and holds, read with naga independently of the crate.
struct Uses {
    storage_buffers: usize,
    workgroup_bytes: usize,
    invocations: usize,
}

fn uses(module: &naga::Module) -> Uses {
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    let mut out = Uses {
        storage_buffers: 0,
        workgroup_bytes: 0,
        invocations: module.entry_points[0]
            .workgroup_size
            .iter()
            .map(|&n| n as usize)
            .product(),
    };
    for (_, var) in module.global_variables.iter() {
        match var.space {
            naga::AddressSpace::Storage { .. } => out.storage_buffers += 1,
            naga::AddressSpace::WorkGroup => out.workgroup_bytes += layouter[var.ty].size as usize,
            _ => {}
        }
    }
    out
}

#[test]
fn every_kernel_expansion_fits_webgpu_and_translates_to_spirv_msl_and_hlsl() {
    let expansions = shader_expansions();
    let mut shaders = BTreeSet::new();
    let mut most = [0usize; 3];
    let mut per_shader = std::collections::BTreeMap::<String, [usize; 3]>::new();
    for (label, source) in &expansions {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(source)));
        let info = Validator::new(ValidationFlags::all(), Capabilities::default())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(source)));
        spv::write_vec(&module, &info, &spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{label} to SPIR-V: {e}"));
        msl::write_string(
            &module,
            &info,
            &msl::Options::default(),
            &msl::PipelineOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{label} to MSL: {e}"));
        let (hlsl_options, pipeline) = (hlsl::Options::default(), hlsl::PipelineOptions::default());
        hlsl::Writer::new(String::new(), &hlsl_options, &pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{label} to HLSL: {e}"));
        // WebGPU's defaults, which every adapter offers, except for the fused recovery
        // kernels, which the route takes only where the adapter offers more (9 and 10
        // storage buffers).
        let used = uses(&module);
        let fused = label.starts_with("adam_recovery") || label.contains("term=limited");
        let webgpu = if fused {
            Limits {
                max_storage_buffers: 10,
                ..Limits::WEBGPU
            }
        } else {
            Limits::WEBGPU
        };
        assert!(
            used.storage_buffers <= webgpu.max_storage_buffers
                && used.workgroup_bytes <= webgpu.max_workgroup_bytes
                && used.invocations <= webgpu.max_invocations,
            "{label}: {} storage buffers, {} B of workgroup memory, {} invocations",
            used.storage_buffers,
            used.workgroup_bytes,
            used.invocations
        );
        let shader = label.split(' ').next().unwrap().to_string();
        let shader = if label.contains("term=limited") {
            format!("{shader} (limited)")
        } else {
            shader
        };
        let entry = per_shader.entry(shader.clone()).or_default();
        for (m, x) in [&mut most, entry].into_iter().flat_map(|m| {
            m.iter_mut()
                .zip([used.storage_buffers, used.workgroup_bytes, used.invocations])
        }) {
            *m = (*m).max(x);
        }
        shaders.insert(label.split(' ').next().unwrap().to_string());
    }
    // Adam with the rotation and the update with the recovery term bind 8 buffers, the
    // fused kernels 9 and 10; Adam's three staging tiles of 256 vec4 hold 12 KiB
    // (top_singular.wgsl's 2·1024 + 2·256 words 10 KiB); every workgroup has 256
    // invocations.
    assert_eq!(most, [10, 12 << 10, 256]);
    // Every shader file is a kernel here, or the shared tail appended to two of them.
    let files: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|f| f.strip_suffix(".wgsl").map(str::to_string))
            .filter(|f| !f.ends_with("_tiles"))
            .collect();
    assert_eq!(shaders, files, "kernels checked against shaders/");
    eprintln!(
        "{} expansions of {} shaders translated",
        expansions.len(),
        shaders.len()
    );
    for (shader, [buffers, bytes, invocations]) in &per_shader {
        eprintln!("| {shader} | {buffers} | {bytes} | {invocations} |");
    }
}

/// A lavapipe (or other Vulkan) device opened with `limits` instead of the adapter's (and
/// all its features), or `None` without an adapter.
fn device_with(limits: wgpu_api::Limits) -> Option<Device> {
    wgpu_device()?;
    let instance = wgpu_api::Instance::new(wgpu_api::InstanceDescriptor {
        backends: wgpu_api::Backends::VULKAN,
        ..wgpu_api::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster_block_on(instance.request_adapter(&wgpu_api::RequestAdapterOptions {
        force_fallback_adapter: false,
        ..Default::default()
    }));
    let Ok(adapter) = adapter else {
        assert!(!wgpu_required(), "no Vulkan adapter for the limits test");
        return None;
    };
    let (device, queue) = pollster_block_on(adapter.request_device(&wgpu_api::DeviceDescriptor {
        label: Some("subtrack limits test"),
        // CubeCL uses what the adapter offers (timestamps, float atomics): only the limits
        // are lowered.
        required_features: adapter.features(),
        required_limits: limits,
        ..Default::default()
    }))
    .expect("a device at the requested limits");
    let setup = WgpuSetup {
        backend: adapter.get_info().backend,
        instance,
        adapter,
        device,
        queue,
    };
    Some(
        Device::wgpu_options()
            .setup(setup)
            .init()
            .expect("the setup registers"),
    )
}

/// Runs a future that completes when first polled, as wgpu's native requests do.
fn pollster_block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// SubTrack++ on a device opened at WebGPU's default limits: the route reads those limits,
/// every kernel fits them, and twelve steps (two subspace updates) match the CPU's portable
/// path.
#[test]
fn the_route_runs_on_a_device_at_webgpu_default_limits() {
    let Some(device) = device_with(wgpu_api::Limits::default()) else {
        return;
    };
    let adapter = kernels::device_limits(&device).expect("a wgpu device");
    assert_eq!(adapter.max_storage_buffers, 8, "{adapter:?}");
    assert_eq!(adapter.max_workgroup_bytes, 16 << 10, "{adapter:?}");
    assert_eq!(adapter.max_binding_bytes, 128 << 20, "{adapter:?}");
    let chosen = route::resolve(RouteRequest::WGSL, &device);
    let sizes = Sizes {
        a: 29,
        r: 4,
        b: 43,
        transposed: false,
    };
    assert_eq!(chosen.name(), "WGSL kernels");
    assert!(
        chosen.fallbacks(sizes).is_empty(),
        "{:?}",
        chosen.fallbacks(sizes)
    );

    let (adam_before, update_before) = (
        kernels::launches("adam", [4, 4, 43]),
        kernels::launches("update", [29, 4, 43]),
    );
    let config = SubTrackConfig::subtrack_plus_plus()
        .with_rank(4)
        .with_update_interval(5);
    let mut rng = Rng::new(29);
    let w0 = rng.mat(29, 43);
    let grads: Vec<_> = (0..12).map(|_| rng.mat(29, 43)).collect();
    let run = |device: &Device, wgsl: bool| super::trajectory(&config, &w0, &grads, device, wgsl);
    let on_gpu = run(&device, true);
    let on_cpu = run(&Device::flex(), false);
    assert_close(
        &on_gpu,
        &on_cpu,
        1e-4,
        "SubTrack++ at WebGPU's default limits",
    );
    assert!(kernels::launches("adam", [4, 4, 43]) >= adam_before + 11);
    // Its 8 storage buffers leave the fused recovery kernels (9 and 10) out: five launches
    // a step, none of them fused.
    assert_eq!(kernels::launches("adam_recovery", [29, 4, 43]), 0);
    assert!(kernels::launches("update", [29, 4, 43]) >= update_before + 11);
}

/// Under limits smaller than the kernels need (4 storage buffers, 8 KiB of workgroup
/// memory) only the projection and the per-column norms fit, and the update takes Burn's
/// ops on the WGSL route; every other operation runs on the portable path, the route says
/// which, and the results match the portable route's. With 3 storage buffers no projection
/// tile fits either, and Burn's matmul projects, its flag still found on the device.
#[test]
fn kernels_past_the_limits_are_never_launched() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let small = Limits {
        max_storage_buffers: 4,
        max_workgroup_bytes: 8 << 10,
        ..Limits::WEBGPU
    };
    let (a, r, b) = (31, 4, 47);
    let sizes = Sizes {
        a,
        r,
        b,
        transposed: false,
    };
    let chosen = route::resolve(RouteRequest::WGSL.within(small), &device);
    assert_eq!(
        chosen.fallbacks(sizes),
        ["adam", "adam with rotation", "recovery", "tracking step"],
        "the update's tiles (5 and 8 bindings) do not fit, so Burn's ops run it on this route"
    );
    assert!(
        route::resolve(RouteRequest::WGSL, &device)
            .fallbacks(sizes)
            .is_empty()
    );

    let mut rng = Rng::new(31);
    let s = upload(&super::orthonormal(a, r, &mut rng), &device);
    let g = upload(&rng.mat(a, b), &device);
    let (project_before, adam_before) = (
        kernels::launches("project", [a, r, b]),
        kernels::launches("adam", [r, r, b]),
    );
    let on_small = download(route::project(&s, &g, RouteRequest::WGSL.within(small)));
    let portable = download(route::project(&s, &g, RouteRequest::PORTABLE));
    assert_close(&on_small, &portable, 1e-5, "projection within 4 bindings");
    assert_eq!(kernels::launches("project", [a, r, b]), project_before + 1);
    let three = Limits {
        max_storage_buffers: 3,
        ..Limits::WEBGPU
    };
    let matmul_before = kernels::launches("project: Burn matmul", [a, r, b]);
    let (by_matmul, flag) = route::project_checked(&s, &g, RouteRequest::WGSL.within(three));
    assert_close(
        &download(by_matmul),
        &portable,
        1e-5,
        "Burn matmul within 3 bindings",
    );
    assert_eq!(flag.into_data().try_to_vec::<f32>().unwrap(), [1.0]);
    assert_eq!(
        kernels::launches("project: Burn matmul", [a, r, b]),
        matmul_before + 1
    );
    assert_eq!(kernels::launches("project", [a, r, b]), project_before + 1);

    // The update with recovery by Burn's ops on the WGSL route, no tile launched.
    let case = super::update::UpdateCase::new(a, r, b, false, &mut rng);
    let coefficients = subtrack::testing::route::UpdateCoefficients {
        alpha: 0.03,
        decay: 0.999,
        scale: 0.25,
    };
    let counts =
        || ["update", "update: Burn matmul"].map(|name| kernels::launches(name, [a, r, b]));
    let update_before = counts();
    let updated = case.run_on(
        coefficients,
        true,
        Some(1.0),
        &device,
        RouteRequest::WGSL.within(small),
    );
    assert_close(
        &updated,
        &case.expected(coefficients, true),
        1e-5,
        "update by Burn's ops",
    );
    assert_eq!(counts(), [update_before[0], update_before[1] + 1]);

    let g_low = route::project(&s, &g, RouteRequest::PORTABLE);
    let zeros = || burn::tensor::Tensor::<2>::zeros([r, b], &device);
    let adam = subtrack::testing::moments::AdamParams {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-8,
    };
    let small_adam = route::adam(
        zeros(),
        zeros(),
        &g_low,
        &adam,
        None,
        None,
        RouteRequest::WGSL.within(small),
    );
    let portable_adam = route::adam(
        zeros(),
        zeros(),
        &g_low,
        &adam,
        None,
        None,
        RouteRequest::PORTABLE,
    );
    assert_close(
        &download(small_adam.normalized),
        &download(portable_adam.normalized),
        1e-6,
        "Adam on the portable path",
    );
    assert_eq!(
        kernels::launches("adam", [r, r, b]),
        adam_before,
        "the Adam kernel (7 bindings) was launched under a 4-binding limit"
    );
}
