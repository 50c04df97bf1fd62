//! Train a small MLP regressor with AdamW, GaLore, SubTrack-Grad and SubTrack++ on the same
//! synthetic data and seed, and print final loss, wall time and optimizer-state bytes.
//!
//! `cargo run --release --example compare_optimizers [-- --device cpu|wgpu --steps N]`
//!
//! Runs on a wgpu adapter when there is one, otherwise on Burn's `flex` CPU backend.

use std::time::Instant;

use burn::module::{Module, ParamGroup};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Tensor};
use subtrack::{SubTrackConfig, state_bytes};

#[derive(Module, Debug)]
struct Mlp {
    embed: Linear,
    hidden: Linear,
    head: Linear,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Self {
            embed: LinearConfig::new(64, 256).init(device),
            hidden: LinearConfig::new(256, 256).init(device),
            head: LinearConfig::new(256, 16).init(device),
        }
    }
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self.embed.forward(x).tanh();
        let h = self.hidden.forward(h).tanh();
        self.head.forward(h)
    }
}

fn pick_device(arg: Option<&str>) -> Result<Device, String> {
    match arg {
        Some("cpu") => Ok(Device::flex()),
        Some("wgpu") => Device::wgpu_options()
            .init()
            .map_err(|e| format!("no wgpu adapter: {e}")),
        Some(other) => Err(format!("unknown --device {other}; use cpu or wgpu")),
        None => Ok(Device::wgpu_options().init().unwrap_or_else(|e| {
            eprintln!("note: no wgpu adapter ({e}); running on the CPU (flex)");
            Device::flex()
        })),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let steps: usize = match flag("--steps").map(str::parse) {
        None => 300,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("error: --steps takes a positive integer");
            std::process::exit(2);
        }
    };
    let device = match pick_device(flag("--device")) {
        Ok(d) => d.autodiff(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    println!("device: {device:?}, {steps} steps, batch 64");

    // A fixed random teacher network provides the targets.
    device.seed(7);
    let teacher = Mlp::new(&device);
    let x_all = Tensor::<2>::random([64 * 16, 64], Distribution::Normal(0.0, 1.0), &device);
    let y_all = teacher.forward(x_all.clone()).detach();

    let base = SubTrackConfig::new()
        .with_rank(32)
        .with_update_interval(50)
        .with_step_size(0.1);
    // The paper's routing: only the square hidden matrix is projected; the input and
    // output layers and all biases use AdamW.
    let projected = ParamGroup::from_regex(r"^hidden\.weight$").expect("valid regex");
    let route = |config: SubTrackConfig| {
        ModuleOptimizer::from(config.adamw().expect("valid config")).with_group(
            projected.clone(),
            config.build().expect("valid config"),
            None,
        )
    };
    let runs: Vec<(&str, ModuleOptimizer)> = vec![
        ("AdamW", AdamWConfig::new().with_weight_decay(0.0).init()),
        (
            "GaLore",
            route(
                base.clone()
                    .with_subspace_update(subtrack::SubspaceUpdate::Svd)
                    .with_projection_aware(subtrack::ProjectionAware::Off)
                    .with_recovery_scaling(subtrack::RecoveryScaling::Off),
            ),
        ),
        (
            "SubTrack-Grad",
            route(
                base.clone()
                    .with_projection_aware(subtrack::ProjectionAware::Off)
                    .with_recovery_scaling(subtrack::RecoveryScaling::Off),
            ),
        ),
        ("SubTrack++", route(base.clone())),
    ];

    println!("| optimizer | final loss | wall time (s) | state bytes (projected / dense) |");
    println!("|---|---|---|---|");
    for (name, mut optim) in runs {
        device.seed(1);
        let mut model = Mlp::new(&device);
        let start = Instant::now();
        let mut loss_value = f32::NAN;
        for step in 0..steps {
            let rows = (step % 16) * 64;
            let x = x_all.clone().slice([rows..rows + 64, 0..64]);
            let y = y_all.clone().slice([rows..rows + 64, 0..16]);
            let loss = (model.forward(x) - y).square().mean();
            if step + 1 == steps {
                loss_value = loss.clone().into_scalar::<f32>();
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
        }
        let seconds = start.elapsed().as_secs_f64();
        let bytes = state_bytes(&optim).expect("state is readable");
        println!(
            "| {name} | {loss_value:.5} | {seconds:.2} | {} ({} / {}) |",
            bytes.total, bytes.projected, bytes.dense
        );
    }
}
