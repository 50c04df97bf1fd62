//! Resume exactness through a real save and load, state size, and mismatched records.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use burn_pack::{Scalar, Writer};
use subtrack::checkpoint::load_checked_file;
use subtrack::{SubTrackConfig, SubTrackError, load_checked, save_atomic, state_bytes};

use crate::reference::Rng;

#[derive(Module, Debug)]
pub struct Net {
    hidden: Linear,
    out: Linear,
}

impl Net {
    pub fn new(device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(24, 16).init(device), // 24×16 weight: projected at r = 4
            out: LinearConfig::new(16, 3).init(device),     // 16×3: dense
        }
    }
    fn loss(&self, step: usize, device: &Device) -> Tensor<1> {
        let mut rng = Rng::new(100 + step as u64);
        let x: Vec<f64> = (0..8 * 24).map(|_| rng.next()).collect();
        let y: Vec<f64> = (0..8 * 3).map(|_| rng.next()).collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [8, 24]).convert::<f32>(), device);
        let y = Tensor::<2>::from_data(TensorData::new(y, [8, 3]).convert::<f32>(), device);
        let h = self.hidden.forward(x).tanh();
        (self.out.forward(h) - y).square().mean()
    }
}

fn train(
    mut net: Net,
    optim: &mut ModuleOptimizer,
    steps: std::ops::Range<usize>,
    device: &Device,
) -> Net {
    for step in steps {
        let grads = GradientsParams::from_grads(net.loss(step, device).backward(), &net);
        net = optim.step(0.01, net, grads);
    }
    net
}

fn weights(net: &Net) -> Vec<f64> {
    let mut out = Vec::new();
    for t in [net.hidden.weight.val(), net.out.weight.val()] {
        out.extend(
            t.into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .unwrap(),
        );
    }
    out
}

/// ‖x − y‖ / ‖y‖ over flat weight vectors.
fn relative_difference(x: &[f64], y: &[f64]) -> f64 {
    let num: f64 = x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = y.iter().map(|b| b * b).sum();
    (num / den).sqrt()
}

fn config() -> SubTrackConfig {
    SubTrackConfig::subtrack_plus_plus()
        .with_rank(4)
        .with_update_interval(5)
        .with_step_size(0.05)
}

#[test]
fn resume_across_a_subspace_update_is_exact() {
    for device in crate::devices() {
        let device = device.autodiff();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for preset in [
            config(),
            SubTrackConfig::galore()
                .with_rank(4)
                .with_update_interval(5),
        ] {
            let net0 = Net::new(&device);
            let mut straight = preset.init().unwrap();
            let expected = weights(&train(net0.clone(), &mut straight, 0..13, &device));

            let mut first = preset.init().unwrap();
            let half = train(net0.clone(), &mut first, 0..7, &device);
            let path = dir.join("optim.bpk");
            save_atomic(&first, &path).unwrap();
            drop(first);
            let mut resumed = load_checked_file(preset.init().unwrap(), &path, &half).unwrap();
            let got = weights(&train(half.clone(), &mut resumed, 7..13, &device));

            let rel = relative_difference(&got, &expected);
            assert!(rel <= 1e-6, "resumed run differs by {rel:e} (relative)");

            // Burn's own byte route (what the Learner uses) restores the same state.
            let mut first = preset.init().unwrap();
            let half = train(net0, &mut first, 0..7, &device);
            let bytes = first.into_bytes().unwrap();
            let mut via_burn = preset.init().unwrap().from_bytes(bytes).unwrap();
            let got = weights(&train(half, &mut via_burn, 7..13, &device));
            // The issue's bound; bitwise equality holds on flex but not on every GPU backend.
            let rel = relative_difference(&got, &expected);
            assert!(
                rel <= 1e-6,
                "Burn's byte route differs by {rel:e} (relative)"
            );
        }
    }
}

#[test]
fn state_bytes_are_exact() {
    let device = Device::flex().autodiff();
    let net = Net::new(&device);
    let (r, a, b) = (4, 16, 24);
    for (preset, limiter) in [(config(), 4), (SubTrackConfig::galore().with_rank(4), 0)] {
        let mut optim = preset.init().unwrap();
        let _ = train(net.clone(), &mut optim, 0..2, &device);
        let bytes = state_bytes(&optim).unwrap();
        // Projected: S (a×r) + M, V (r×b) in f32, plus the f32 limiter norm for SubTrack++.
        assert_eq!(bytes.projected, 4 * (a * r + 2 * r * b) + limiter);
        // Dense: AdamW's M and V for hidden.bias (16), out.weight (16×3), out.bias (3).
        assert_eq!(bytes.dense, 4 * 2 * (16 + 48 + 3));
        assert_eq!(bytes.total, bytes.projected + bytes.dense);
    }
}

/// A record for `id` with the given tensors and scalars, written with burn-pack directly.
fn record(id: u64, tensors: &[(&str, Vec<usize>)], scalars: &[(&str, Scalar)]) -> Bytes {
    let tensors = tensors
        .iter()
        .map(|(leaf, shape)| {
            let n: usize = shape.iter().product();
            let data = TensorData::new(vec![0.5f32; n], shape.clone());
            let (bytes, shape, dtype) = data.into_parts();
            burn_pack::Tensor::new(format!("{id}.{leaf}"), dtype, shape, Some(id), bytes)
        })
        .collect();
    let mut writer = Writer::new(tensors).with_scalar(&format!("{id}.__rank"), Scalar::from(2u64));
    for (leaf, value) in scalars {
        writer = writer.with_scalar(&format!("{id}.{leaf}"), *value);
    }
    writer.into_bytes().unwrap()
}

#[test]
fn mismatched_records_are_errors() {
    let device = Device::flex().autodiff();
    let net = Net::new(&device);
    let id = net.hidden.weight.id.val();
    let scalars = [
        ("step", Scalar::from(3u64)),
        ("transposed", Scalar::from(true)),
    ];
    let good = [
        ("basis", vec![16, 4]),
        ("moment_1", vec![4, 24]),
        ("moment_2", vec![4, 24]),
    ];
    // The well-formed record loads.
    load_checked(config().init().unwrap(), record(id, &good, &scalars), &net).unwrap();

    let cases: Vec<(&str, Bytes)> = vec![
        (
            "wrong basis rows",
            record(
                id,
                &[
                    ("basis", vec![20, 4]),
                    ("moment_1", vec![4, 24]),
                    ("moment_2", vec![4, 24]),
                ],
                &scalars,
            ),
        ),
        (
            "wrong moment shape",
            record(
                id,
                &[
                    ("basis", vec![16, 4]),
                    ("moment_1", vec![4, 30]),
                    ("moment_2", vec![4, 30]),
                ],
                &scalars,
            ),
        ),
        ("missing moment_2", record(id, &good[..2], &scalars)),
        ("missing transposed", record(id, &good, &scalars[..1])),
        (
            "wrong side",
            record(
                id,
                &good,
                &[scalars[0], ("transposed", Scalar::from(false))],
            ),
        ),
        ("unknown parameter", record(12345, &good, &scalars)),
        (
            "dense moments of the wrong shape",
            record(
                id,
                &[("moment_1", vec![24, 15]), ("moment_2", vec![24, 15])],
                &scalars[..1],
            ),
        ),
    ];
    for (what, bytes) in cases {
        match load_checked(config().init().unwrap(), bytes, &net) {
            Err(SubTrackError::RecordMismatch(msg)) => eprintln!("{what}: {msg}"),
            other => panic!("{what}: expected a mismatch, got {:?}", other.map(|_| ())),
        }
    }
    let garbage = Bytes::from_bytes_vec(b"definitely not a burnpack record".to_vec());
    assert!(load_checked(config().init().unwrap(), garbage, &net).is_err());
    let missing = load_checked_file(config().init().unwrap(), "/nonexistent/optim.bpk", &net);
    assert!(matches!(missing, Err(SubTrackError::Io(_))));
}

#[test]
#[should_panic(expected = "corrupt SubTrack optimizer record")]
fn burn_load_record_does_not_silently_reinitialise() {
    let device = Device::flex().autodiff();
    let net = Net::new(&device);
    let id = net.hidden.weight.id.val();
    let bytes = record(
        id,
        &[("basis", vec![16, 4]), ("moment_1", vec![4, 24])],
        &[
            ("step", Scalar::from(3u64)),
            ("transposed", Scalar::from(true)),
        ],
    );
    let _ = config().init().unwrap().from_bytes(bytes);
}

#[test]
fn save_is_atomic_and_keeps_the_old_file_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("ckpt.bin");
    subtrack::checkpoint::write_atomic(&path, b"good").unwrap();
    // Writing into a directory that does not exist fails and leaves nothing behind.
    let bad = dir.join("missing").join("ckpt.bin");
    assert!(subtrack::checkpoint::write_atomic(&bad, b"new").is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"good");
    subtrack::checkpoint::write_atomic(&path, b"better").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"better");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
}

#[derive(Module, Debug)]
pub struct PaperBlock {
    embedding: Linear, // 2-D and large enough to project, but the paper keeps it on AdamW
    attention: Linear,
}

/// The paper's setup: only attention (and MLP) weights projected, everything else on AdamW,
/// routed with `ModuleOptimizer::with_group`.
#[test]
fn paper_routing_projects_only_the_selected_weights() {
    use burn::module::ParamGroup;
    let device = Device::flex().autodiff();
    let block = PaperBlock {
        embedding: LinearConfig::new(24, 16).init(&device),
        attention: LinearConfig::new(24, 16).init(&device),
    };
    let config = config();
    let projected = ParamGroup::from_regex(r"^attention\.weight$").unwrap();
    let mut optim = ModuleOptimizer::from(config.adamw().unwrap()).with_group(
        projected,
        config.build().unwrap(),
        None,
    );
    let x = Tensor::<2>::ones([4, 24], &device);
    let loss = (block.embedding.forward(x.clone()) * block.attention.forward(x)).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &block);
    let _ = optim.step(0.01, block, grads);
    let bytes = state_bytes(&optim).unwrap();
    // Only attention.weight is projected: S 16×4, M and V 4×24, limiter norm.
    assert_eq!(bytes.projected, 4 * (16 * 4 + 2 * 4 * 24) + 4);
    // AdamW moments for embedding.weight (24×16) and both biases (16 each).
    assert_eq!(bytes.dense, 4 * 2 * (24 * 16 + 16 + 16));
}
