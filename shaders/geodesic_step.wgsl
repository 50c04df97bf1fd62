// The geodesic update of the basis and its change of basis (docs/algorithm.md §4):
//
//     S' = S + ((cos θ − 1)·(S·v) − sin θ·u)·vᵀ,   u = ∇F·v / σ
//     C  = S'ᵀS = I − (1 − cos θ)·v·vᵀ              (because Sᵀu = 0)
//
// from the triplet of top_singular.wgsl. Where it did not move (moved = 0), S' = S and
// C = I exactly.
//
// Bindings (row-major f32, read_write because CubeCL sub-allocates tensors from shared
// buffers):
//   @binding(0) basis    S, a×r                               (read)
//   @binding(1) tangent  ∇F, a×r                              (read)
//   @binding(2) triplet  [v (r), σ, θ, cos θ, sin θ, moved]   (read)
//   @binding(3) output   S', a×r                              (written)
//   @binding(4) change   C, r×r                               (written)
//
// Template values (part of the kernel id): {{a}}, {{r}}. One workgroup of 64 invocations
// per row i < max(a, r) (row = wid.x + 32768·wid.y): S'[i, :] for i < a, C[i, :] for i < r.
// The row's dot products S[i, :]·v and ∇F[i, :]·v are reduced in workgroup memory.

const A: u32 = {{a}}u;
const R: u32 = {{r}}u;

@group(0) @binding(0) var<storage, read_write> basis: array<f32>;
@group(0) @binding(1) var<storage, read_write> tangent: array<f32>;
@group(0) @binding(2) var<storage, read_write> triplet: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
@group(0) @binding(4) var<storage, read_write> change: array<f32>;

var<workgroup> red_s: array<f32, 64>;
var<workgroup> red_f: array<f32, 64>;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let i = wid.x + 32768u * wid.y;
    let sigma = triplet[R];
    let cos_t = triplet[R + 2u];
    let sin_t = triplet[R + 3u];
    let moved = triplet[R + 4u] != 0.0;
    if (i < A) {
        var sv: f32 = 0.0;
        var fv: f32 = 0.0;
        for (var k: u32 = t; k < R; k = k + 64u) {
            sv = sv + basis[i * R + k] * triplet[k];
            fv = fv + tangent[i * R + k] * triplet[k];
        }
        red_s[t] = sv;
        red_f[t] = fv;
    }
    workgroupBarrier();
    for (var half: u32 = 32u; half > 0u; half = half / 2u) {
        if (t < half) {
            red_s[t] = red_s[t] + red_s[t + half];
            red_f[t] = red_f[t] + red_f[t + half];
        }
        workgroupBarrier();
    }
    if (i < A) {
        let coefficient = (cos_t - 1.0) * red_s[0] - sin_t * (red_f[0] / sigma);
        for (var k: u32 = t; k < R; k = k + 64u) {
            let at = i * R + k;
            if (moved) {
                output[at] = basis[at] + coefficient * triplet[k];
            } else {
                output[at] = basis[at];
            }
        }
    }
    if (i < R) {
        for (var k: u32 = t; k < R; k = k + 64u) {
            var c: f32 = select(0.0, 1.0, i == k);
            if (moved) {
                c = c - (1.0 - cos_t) * triplet[i] * triplet[k];
            }
            change[i * R + k] = c;
        }
    }
}
