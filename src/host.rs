//! Transfers between device tensors and host f64 buffers (small matrices only).

use burn::tensor::{DType, Device, Tensor, TensorData};

/// Read a tensor back as row-major f64 values.
pub(crate) fn read<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
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
