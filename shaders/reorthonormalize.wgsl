// Re-orthonormalisation of the basis after a geodesic step, when its drift exceeds the
// tolerance (docs/algorithm.md §4):
//
//     drift = max |S'ᵀS' − I|;   if drift > tol:  S'ᵀS' = L·Lᵀ (Cholesky),  F = L⁻¹
//                                 else:            F = I
//
// The caller then forms S'' = S'·Fᵀ = S'·L⁻ᵀ (orthonormal) and C'' = F·C = S''ᵀS with
// tangent.wgsl; with F = I both products are exact copies. If S'ᵀS' is not positive
// definite (S' rank-deficient, which a geodesic step does not produce), F = I as well.
//
// Bindings (row-major f32, read_write because CubeCL sub-allocates tensors from shared
// buffers):
//   @binding(0) gram    S'ᵀS', r×r                                        (read)
//   @binding(1) lower   L, r×r                                            (scratch)
//   @binding(2) factor  F, r×r                                            (written)
//   @binding(3) params  [tol]                                             (read)
//   @binding(4) status  [1 if re-orthonormalised, else 0]                 (written)
//
// Template value (part of the kernel id): {{r}}. One workgroup of 256 invocations: the
// Cholesky factor column by column (each column's entries in parallel), then L⁻¹ by forward
// substitution, one column of it per invocation.

const R: u32 = {{r}}u;

@group(0) @binding(0) var<storage, read_write> gram: array<f32>;
@group(0) @binding(1) var<storage, read_write> lower: array<f32>;
@group(0) @binding(2) var<storage, read_write> factor: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> status: array<f32>;

var<workgroup> red: array<f32, 256>;
var<workgroup> decision: u32;
var<workgroup> failed: u32;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) t: u32) {
    // max |S'ᵀS' − I|; a NaN entry counts as past any tolerance.
    var drift: f32 = 0.0;
    for (var idx: u32 = t; idx < R * R; idx = idx + 256u) {
        let d = abs(gram[idx] - select(0.0, 1.0, idx / R == idx % R));
        if (!(d <= drift)) {
            drift = select(1e30, d, d == d);
        }
    }
    red[t] = drift;
    if (t == 0u) {
        failed = 0u;
    }
    workgroupBarrier();
    for (var half: u32 = 128u; half > 0u; half = half / 2u) {
        if (t < half) {
            red[t] = max(red[t], red[t + half]);
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        decision = select(0u, 1u, red[0] > params[0]);
    }
    let reorthonormalize = workgroupUniformLoad(&decision) == 1u;
    if (reorthonormalize) {
        for (var j: u32 = 0u; j < R; j = j + 1u) {
            if (t == 0u) {
                var s = gram[j * R + j];
                for (var k: u32 = 0u; k < j; k = k + 1u) {
                    s = s - lower[j * R + k] * lower[j * R + k];
                }
                if (!(s > 0.0)) {
                    failed = 1u;
                    s = 1.0;
                }
                lower[j * R + j] = sqrt(s);
            }
            storageBarrier();
            let diag = lower[j * R + j];
            for (var i: u32 = j + 1u + t; i < R; i = i + 256u) {
                var s = gram[i * R + j];
                for (var k: u32 = 0u; k < j; k = k + 1u) {
                    s = s - lower[i * R + k] * lower[j * R + k];
                }
                lower[i * R + j] = s / diag;
            }
            storageBarrier();
        }
    }
    let fail = workgroupUniformLoad(&failed) == 1u;
    if (reorthonormalize && !fail) {
        for (var c: u32 = t; c < R; c = c + 256u) {
            for (var i: u32 = 0u; i < c; i = i + 1u) {
                factor[i * R + c] = 0.0;
            }
            factor[c * R + c] = 1.0 / lower[c * R + c];
            for (var i: u32 = c + 1u; i < R; i = i + 1u) {
                var s: f32 = 0.0;
                for (var k: u32 = c; k < i; k = k + 1u) {
                    s = s + lower[i * R + k] * factor[k * R + c];
                }
                factor[i * R + c] = -s / lower[i * R + i];
            }
        }
    } else {
        for (var idx: u32 = t; idx < R * R; idx = idx + 256u) {
            factor[idx] = select(0.0, 1.0, idx / R == idx % R);
        }
    }
    if (t == 0u) {
        status[0] = select(0.0, 1.0, reorthonormalize && !fail);
    }
}
