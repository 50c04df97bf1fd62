// The step flag of a gradient (docs/algorithm.md §2, the non-finite guard) where the
// projection is Burn's matmul instead of project.wgsl: the flag's slot is set to 0 where
// the values hold NaN or ±∞, else left as the caller filled it (1). Every invocation that
// finds one writes the same 0, so no reduction is needed and the launch reads nothing back.
//
// Bindings (f32; read_write because CubeCL sub-allocates tensors from shared buffers):
//   @binding(0) values  {{count}} floats: G, or one chunk of it, in any layout  (read)
//   @binding(1) flag    the parameter buffer; slot {{flag_at}} is the flag       (written)
//
// Template values (part of the kernel id): {{count}}, {{flag_at}}, {{workgroups}} (the
// launch's workgroups, at most 65,535; each of the workgroups × 256 invocations takes every
// (workgroups·256)-th value from its own index on).

const COUNT: u32 = {{count}}u;
const FLAG_AT: u32 = {{flag_at}}u;
const STRIDE: u32 = {{workgroups}}u * 256u;

@group(0) @binding(0) var<storage, read_write> values: array<f32>;
@group(0) @binding(1) var<storage, read_write> flag: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    // NaN or ±∞: all exponent bits set, tested by bits (robust to finite-math compilers).
    let exponent = 0x7f800000u;
    var bad = false;
    for (var i: u32 = gid.x; i < COUNT; i = i + STRIDE) {
        bad = bad || (bitcast<u32>(values[i]) & exponent) == exponent;
    }
    if (bad) {
        flag[FLAG_AT] = 0.0;
    }
}
