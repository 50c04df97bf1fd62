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
    let data = TensorData::new(values, [rows, cols]).convert_dtype(dtype);
    Tensor::from_data(data, device)
}
