// Helpers of project.wgsl and project_wide.wgsl (G̃ = SᵀG, docs/algorithm.md §2), appended to
// each by src/kernels/project.rs: guarded vec4 reads of S and G (or of Gᵀ stored b×a), the
// non-finite test of the step flag, and the guarded store of G̃. They use the including
// shader's constants A, R, B, ACCUMULATE and its bindings basis (S, a×r), grad (G, a×b, or
// Gᵀ b×a) and output (G̃, r×b, or splits×r×b partial sums); they declare nothing.

// Whether any component is NaN or ±∞ (all exponent bits set), by bits: robust to
// compilers that assume finite math.
fn non_finite(v: vec4<f32>) -> bool {
    let exponent = vec4<u32>(0x7f800000u);
    return any((bitcast<vec4<u32>>(v) & exponent) == exponent);
}

// S[row, col … col + 3], zero past its edges.
fn load_s(row: u32, col: u32) -> vec4<f32> {
    if (row >= A) {
        return vec4<f32>(0.0);
    }
    let at = row * R + col;
    if (col + 3u < R) {
        return vec4<f32>(basis[at], basis[at + 1u], basis[at + 2u], basis[at + 3u]);
    }
    var v = vec4<f32>(0.0);
    for (var q: u32 = 0u; q < 4u; q = q + 1u) {
        if (col + q < R) {
            v[q] = basis[at + q];
        }
    }
    return v;
}

// G[row, col … col + 3] from G stored a×b, zero past its edges.
fn load_g(row: u32, col: u32) -> vec4<f32> {
    if (row >= A) {
        return vec4<f32>(0.0);
    }
    let at = row * B + col;
    if (col + 3u < B) {
        return vec4<f32>(grad[at], grad[at + 1u], grad[at + 2u], grad[at + 3u]);
    }
    var v = vec4<f32>(0.0);
    for (var q: u32 = 0u; q < 4u; q = q + 1u) {
        if (col + q < B) {
            v[q] = grad[at + q];
        }
    }
    return v;
}

// G[row … row + 3, col] from Gᵀ stored b×a: four consecutive elements of stored row `col`,
// zero past the edges.
fn load_g_transposed(row: u32, col: u32) -> vec4<f32> {
    if (col >= B) {
        return vec4<f32>(0.0);
    }
    let at = col * A + row;
    if (row + 3u < A) {
        return vec4<f32>(grad[at], grad[at + 1u], grad[at + 2u], grad[at + 3u]);
    }
    var v = vec4<f32>(0.0);
    for (var q: u32 = 0u; q < 4u; q = q + 1u) {
        if (row + q < A) {
            v[q] = grad[at + q];
        }
    }
    return v;
}

// Writes (or with ACCUMULATE adds) v to G̃[i, j … j + 3] in the slice starting at out0,
// within the edges.
fn store(out0: u32, i: u32, j: u32, v: vec4<f32>) {
    if (i >= R) {
        return;
    }
    for (var q: u32 = 0u; q < 4u; q = q + 1u) {
        if (j + q < B) {
            let at = out0 + i * B + j + q;
            if (ACCUMULATE) {
                output[at] = output[at] + v[q];
            } else {
                output[at] = v[q];
            }
        }
    }
}
