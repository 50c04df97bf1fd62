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

/// `n` standard normal values from SplitMix64 and the Box–Muller transform.
pub(crate) fn gaussian(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    let mut uniform = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect()
}
