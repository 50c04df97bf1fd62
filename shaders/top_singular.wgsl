// The top singular triplet of the tangent ∇F (a×r) through the r×r problem, and the
// geodesic angle (docs/algorithm.md §4):
//
//     P = ∇Fᵀ∇F;  v = top eigenvector of P (unit);  σ = sqrt(vᵀPv);  θ = min(η·σ, θ_max)
//
// The caller passes P and Q = P^(2^q)/‖·‖ (q repeated squarings), whose columns are all
// parallel to v up to (λ2/λ1)^(2^q). v starts as Q's column with the largest diagonal entry
// (|v_j| largest, so never a near-zero column) and is refined by power iterations with P.
// The step is taken ("moved" = 1) only when the step runs (flag = 1), σ is finite, above
// the round-off floor σ > floor·‖G‖²_F, and θ > 0; otherwise θ = 0, cos θ = 1, sin θ = 0 and S stays.
//
// Bindings (row-major f32, read_write because CubeCL sub-allocates tensors from shared
// buffers):
//   @binding(0) normal   P, r×r                                   (read)
//   @binding(1) powered  Q, r×r                                   (read)
//   @binding(2) params   [η, θ_max (< 0: none), floor, ‖G‖²_F, flag] (read)
//   @binding(3) triplet  [v (r), σ, θ, cos θ, sin θ, moved]       (written)
//
// Template values (part of the kernel id): {{r}} (at most 1024), {{refine}} (power
// iterations). One workgroup of 256 invocations; v lives in workgroup memory.

const R: u32 = {{r}}u;
const REFINE: u32 = {{refine}}u;

@group(0) @binding(0) var<storage, read_write> normal: array<f32>;
@group(0) @binding(1) var<storage, read_write> powered: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> triplet: array<f32>;

var<workgroup> v: array<f32, 1024>;
var<workgroup> w: array<f32, 1024>;
var<workgroup> red: array<f32, 256>;
var<workgroup> arg: array<u32, 256>;

// sin and cos of x to ~3e-7 absolute for any finite x: a Cody–Waite reduction to [−π, π]
// (2π = C1 + C2, C1 exact in f32), then Taylor series to degree 23/22 in Horner form, so the
// result does not depend on a GPU's built-in sin/cos (the Vulkan spec bounds those only on
// [−π, π], and loosely).
fn sin_cos(x: f32) -> vec2<f32> {
    let n = round(x * 0.15915494309189535);
    let y = (x - n * 6.28125) - n * 0.0019353071795864769;
    let y2 = y * y;
    var s: f32 = 0.0;
    var c: f32 = 0.0;
    // sin y = y·Σ (−y²)^k/(2k+1)!, cos y = Σ (−y²)^k/(2k)!, k = 11 … 0.
    for (var k: i32 = 11; k >= 0; k = k - 1) {
        let kf = f32(k);
        s = 1.0 - s * y2 / ((2.0 * kf + 2.0) * (2.0 * kf + 3.0));
        c = 1.0 - c * y2 / ((2.0 * kf + 1.0) * (2.0 * kf + 2.0));
    }
    return vec2<f32>(y * s, c);
}

fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// Σ over the workgroup of each invocation's `x`, returned to all.
fn workgroup_sum(t: u32, x: f32) -> f32 {
    red[t] = x;
    workgroupBarrier();
    for (var half: u32 = 128u; half > 0u; half = half / 2u) {
        if (t < half) {
            red[t] = red[t] + red[t + half];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// w = P·v, then ‖w‖² returned to all.
fn multiply(t: u32) -> f32 {
    var sq: f32 = 0.0;
    for (var i: u32 = t; i < R; i = i + 256u) {
        var acc: f32 = 0.0;
        for (var k: u32 = 0u; k < R; k = k + 1u) {
            acc = acc + normal[i * R + k] * v[k];
        }
        w[i] = acc;
        sq = sq + acc * acc;
    }
    return workgroup_sum(t, sq);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) t: u32) {
    // The column of Q with the largest diagonal entry.
    var best: f32 = -1.0;
    var best_at: u32 = 0u;
    for (var j: u32 = t; j < R; j = j + 256u) {
        let d = powered[j * R + j];
        if (d > best) {
            best = d;
            best_at = j;
        }
    }
    red[t] = best;
    arg[t] = best_at;
    workgroupBarrier();
    for (var half: u32 = 128u; half > 0u; half = half / 2u) {
        if (t < half && red[t + half] > red[t]) {
            red[t] = red[t + half];
            arg[t] = arg[t + half];
        }
        workgroupBarrier();
    }
    let col = arg[0];
    workgroupBarrier();
    var sq: f32 = 0.0;
    for (var i: u32 = t; i < R; i = i + 256u) {
        let x = powered[i * R + col];
        v[i] = x;
        sq = sq + x * x;
    }
    var norm = sqrt(workgroup_sum(t, sq));
    for (var i: u32 = t; i < R; i = i + 256u) {
        v[i] = v[i] / norm;
    }
    workgroupBarrier();
    for (var it: u32 = 0u; it < REFINE; it = it + 1u) {
        norm = sqrt(multiply(t));
        for (var i: u32 = t; i < R; i = i + 256u) {
            v[i] = w[i] / norm;
        }
        workgroupBarrier();
    }
    // σ² = vᵀ·P·v.
    multiply(t);
    var dot: f32 = 0.0;
    for (var i: u32 = t; i < R; i = i + 256u) {
        dot = dot + v[i] * w[i];
    }
    let sigma = sqrt(max(workgroup_sum(t, dot), 0.0));
    var theta = params[0] * sigma;
    if (params[1] >= 0.0) {
        theta = min(theta, params[1]);
    }
    let moved = params[4] != 0.0 && is_finite(sigma) && sigma > params[2] * params[3]
        && theta > 0.0 && is_finite(theta);
    for (var i: u32 = t; i < R; i = i + 256u) {
        triplet[i] = v[i];
    }
    if (t == 0u) {
        if (moved) {
            triplet[R] = sigma;
            triplet[R + 1u] = theta;
            let sc = sin_cos(theta);
            triplet[R + 2u] = sc.y;
            triplet[R + 3u] = sc.x;
            triplet[R + 4u] = 1.0;
        } else {
            triplet[R] = select(0.0, sigma, is_finite(sigma));
            triplet[R + 1u] = 0.0;
            triplet[R + 2u] = 1.0;
            triplet[R + 3u] = 0.0;
            triplet[R + 4u] = 0.0;
        }
    }
}
