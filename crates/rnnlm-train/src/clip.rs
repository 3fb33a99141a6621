//! Gradient clipping by the global norm, d2l's `grad_clipping`: all gradients are treated as
//! one vector. (Burn's `GradientClipping::Norm` clips every parameter tensor on its own.)

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = grad.square().sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + squares,
                None => squares,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, grad.mul_scalar(self.factor));
        }
    }
}

/// The L2 norm of all of `module`'s gradients taken together: `sqrt(Σ_p Σ_i g_{p,i}²)`.
/// Costs one device sync. Returns 0 when no parameter has a gradient.
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f32 {
    let mut visitor = SquaredNorm { grads, total: None };
    module.visit(&mut visitor);
    visitor.total.map_or(0.0, |t| t.sqrt().into_scalar::<f32>())
}

/// Clips the gradients of any Burn module by their global norm: if `||g|| > theta`, every
/// gradient is multiplied by `theta / ||g||`; otherwise they are left untouched. Returns the
/// norm before clipping (log it: it tells whether clipping is active).
///
/// A non-finite norm is returned as is and the gradients are left alone, so the caller can
/// stop instead of stepping with them.
pub fn clip_grad_global_norm<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    theta: f32,
) -> f32 {
    let norm = global_grad_norm(module, grads);
    if norm.is_finite() && norm > theta {
        module.visit(&mut Scale {
            grads,
            factor: theta / norm,
        });
    }
    norm
}
