//! Global-norm gradient clipping over all parameters of a module (Burn's own clipping is per
//! tensor).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t.to_device(&s.device()) + s,
                None => s,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Σ‖g‖² over all of `module`'s gradients, as a one-element tensor left on the device
/// (`None` when there are none): to read back together with other values.
pub fn squared_norm<M: Module>(grads: &GradientsParams, module: &M) -> Option<Tensor<1>> {
    let mut visitor = SquaredNorm { grads, total: None };
    module.visit(&mut visitor);
    visitor.total
}

/// The global L2 norm of all of `module`'s gradients (one read-back to the host).
/// Non-finite when any gradient holds a NaN or an infinity.
pub fn global_norm<M: Module>(grads: &GradientsParams, module: &M) -> f64 {
    squared_norm(grads, module)
        .map_or(0.0, |t| t.into_scalar::<f32>() as f64)
        .sqrt()
}

/// Scale every gradient so that the global norm is at most `max_norm`, given the norm
/// `norm` from [`global_norm`]. Returns the factor applied (1 when nothing was clipped).
pub fn clip_to<M: Module>(
    grads: &mut GradientsParams,
    module: &M,
    norm: f64,
    max_norm: f64,
) -> f64 {
    if norm <= max_norm || !norm.is_finite() {
        return 1.0;
    }
    let factor = max_norm / norm;
    module.visit(&mut Scale { grads, factor });
    factor
}
