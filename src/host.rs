//! Transfers between device tensors and host f64 buffers (small matrices only).

use std::cell::Cell;

use burn::tensor::{Bool, DType, Device, Tensor, TensorData};

thread_local! {
    static READS: Cell<u64> = const { Cell::new(0) };
}

/// Read-backs made through this module on the calling thread.
pub(crate) fn reads_on_this_thread() -> u64 {
    READS.with(Cell::get)
}

fn count_read() {
    READS.with(|n| n.set(n.get() + 1));
}

/// Read a single boolean back.
pub(crate) fn read_flag(tensor: Tensor<1, Bool>) -> bool {
    count_read();
    tensor.into_scalar::<bool>()
}

/// Whether every element of `tensor` is finite, from one read-back of its sum in the
/// common case: a finite sum has no NaN or ±∞ term (either would carry into it). Only a
/// non-finite sum, a NaN or ±∞ element or an overflow, takes the exact element-wise check
/// (a second read-back). One reduction instead of `is_finite().all()`'s four passes.
pub(crate) fn read_all_finite<const D: usize>(tensor: Tensor<D>) -> bool {
    all_finite_given(tensor.clone().sum(), tensor)
}

/// [`read_all_finite`] from a reduction already at hand: `total` (\[1\]) adds up terms
/// each of which is NaN or ±∞ where an element of `tensor` is, such as `tensor`'s sum or
/// the sum of its squares. Only a non-finite `total` takes the exact check.
pub(crate) fn all_finite_given<const D: usize>(total: Tensor<1>, tensor: Tensor<D>) -> bool {
    read_scalar(total).is_finite() || read_flag(tensor.is_finite().all())
}

/// Read a tensor back as row-major f64 values.
pub(crate) fn read<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
    count_read();
    tensor
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("a float tensor converts to f64")
}

/// Read a single-element tensor as f64.
pub(crate) fn read_scalar<const D: usize>(tensor: Tensor<D>) -> f64 {
    read(tensor)[0]
}

/// Upload row-major f64 values as a `rows×cols` tensor of `dtype` on `device`.
pub(crate) fn upload(
    values: Vec<f64>,
    rows: usize,
    cols: usize,
    dtype: DType,
    device: &Device,
) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), (device, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_survives_an_overflowing_sum_and_catches_every_non_finite_value() {
        let device = Device::flex();
        let check = |values: &[f32]| {
            read_all_finite(Tensor::<1>::from_data(TensorData::from(values), &device))
        };
        assert!(check(&[1.0, -2.0, 3.5]));
        assert!(check(&[f32::MAX, f32::MAX, -1.0]), "a sum overflowing to ∞");
        assert!(check(&[-f32::MAX, -f32::MAX]), "a sum overflowing to −∞");
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(!check(&[1.0, bad, 2.0]), "{bad}");
            assert!(
                !check(&[f32::MAX, f32::MAX, bad]),
                "{bad} beside an overflow"
            );
        }
        assert!(!check(&[f32::INFINITY, f32::NEG_INFINITY]), "∞ − ∞");
    }
}
