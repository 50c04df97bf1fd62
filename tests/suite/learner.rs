//! SubTrack inside burn-train's `Learner`, with an LR scheduler, gradient accumulation of 2,
//! the Learner's checkpointer, and a resume.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::logger::InMemoryMetricLogger;
use burn::train::metric::LossMetric;
use burn::train::{
    InferenceStep, Learner, RegressionOutput, SupervisedTraining, TrainOutput, TrainStep,
};
use subtrack::SubTrackConfig;

use crate::reference::Rng;

#[derive(Module, Debug)]
pub struct Regressor {
    weight: Param<Tensor<2>>, // 12×8: projected at rank 2
    bias: Param<Tensor<1>>,
}

impl Regressor {
    fn new(device: &Device) -> Self {
        let mut rng = Rng::new(21);
        let w: Vec<f64> = (0..96).map(|_| 0.3 * rng.next()).collect();
        Self {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [12, 8]).convert::<f32>(),
                device,
            )),
            bias: Param::from_tensor(Tensor::zeros([8], device)),
        }
    }
    fn loss(&self, batch: &Batch) -> (Tensor<1>, Tensor<2>) {
        let out = batch.x.clone().matmul(self.weight.val()) + self.bias.val().unsqueeze();
        ((out.clone() - batch.y.clone()).square().mean(), out)
    }
}

#[derive(Clone, Debug)]
pub struct Batch {
    x: Tensor<2>,
    y: Tensor<2>,
}

struct MakeBatch;

impl Batcher<usize, Batch> for MakeBatch {
    fn batch(&self, items: Vec<usize>, device: &Device) -> Batch {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in &items {
            let mut rng = Rng::new(500 + *i as u64);
            xs.extend((0..12).map(|_| rng.next()));
            ys.extend((0..8).map(|_| rng.next()));
        }
        let n = items.len();
        Batch {
            x: Tensor::from_data(TensorData::new(xs, [n, 12]).convert::<f32>(), device),
            y: Tensor::from_data(TensorData::new(ys, [n, 8]).convert::<f32>(), device),
        }
    }
}

impl TrainStep for Regressor {
    type Input = Batch;
    type Output = RegressionOutput;
    fn step(&self, batch: Batch) -> TrainOutput<RegressionOutput> {
        let (loss, out) = self.loss(&batch);
        let output = RegressionOutput::new(loss.clone(), out, batch.y);
        TrainOutput::new(self, loss.backward(), output)
    }
}

impl InferenceStep for Regressor {
    type Input = Batch;
    type Output = RegressionOutput;
    fn step(&self, batch: Batch) -> RegressionOutput {
        let (loss, out) = self.loss(&batch);
        RegressionOutput::new(loss, out, batch.y)
    }
}

type Loader = Arc<dyn DataLoader<Batch>>;

fn loaders() -> (Loader, Loader) {
    let train = DataLoaderBuilder::new(MakeBatch)
        .batch_size(2)
        .build(InMemDataset::new((0..8).collect()));
    let valid = DataLoaderBuilder::new(MakeBatch)
        .batch_size(4)
        .build(InMemDataset::new((8..12).collect()));
    (train, valid)
}

fn learner(device: &Device) -> Learner<Regressor> {
    let optim = SubTrackConfig::subtrack_plus_plus()
        .with_rank(2)
        .with_update_interval(3)
        .with_step_size(0.05)
        .init()
        .unwrap();
    let scheduler = CosineAnnealingLrSchedulerConfig::new(0.05, 8)
        .init()
        .unwrap();
    Learner::new(Regressor::new(device), optim, scheduler)
}

fn run(
    dir: &std::path::Path,
    epochs: usize,
    resume_from: Option<usize>,
    device: &Device,
) -> (Regressor, Vec<f64>) {
    let (train, valid) = loaders();
    let mut training = SupervisedTraining::new(dir, train, valid)
        .num_epochs(epochs)
        .grads_accumulation(2)
        .with_default_checkpointers()
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(4))
        .with_metric_logger(InMemoryMetricLogger::new())
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .with_application_logger(None);
    if let Some(epoch) = resume_from {
        training = training.checkpoint(epoch);
    }
    let model = training.launch(learner(device)).model;
    let w = weights(&model);
    (model, w)
}

fn weights(model: &Regressor) -> Vec<f64> {
    let data = model.weight.val().into_data().convert::<f64>();
    data.try_into_vec::<f64>().unwrap()
}

#[test]
fn learner_trains_checkpoints_and_resumes() {
    let device = Device::flex().autodiff();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    let w0 = weights(&Regressor::new(&device));
    let (model, straight) = run(&root.join("straight"), 4, None, &device);
    assert_ne!(straight, w0, "training did not move the weights");
    let (train, _) = loaders();
    let loss_of = |m: &Regressor| -> f64 {
        let m = m.clone().train();
        train
            .iter()
            .map(|b| m.loss(&b.unwrap()).0.into_scalar::<f32>() as f64)
            .sum()
    };
    let trained_loss = loss_of(&model);
    let start_loss = loss_of(&Regressor::new(&device));
    assert!(
        trained_loss < start_loss,
        "loss {start_loss} -> {trained_loss} did not fall"
    );

    let dir = root.join("resumed");
    let _ = run(&dir, 2, None, &device);
    assert!(
        dir.join("checkpoint").join("optim-2.bpk").exists(),
        "no optimizer checkpoint written"
    );
    let (_, resumed) = run(&dir, 4, Some(2), &device);
    let diff = crate::max_abs_diff(&resumed, &straight);
    assert!(
        diff <= 1e-6,
        "resumed weights differ from the uninterrupted run by {diff:e}"
    );
}
