// Split-K projection's reduction (docs/algorithm.md §2): G̃ = Σ_z S_zᵀ·G_z, the sum of the
// {{splits}} partial products that project.wgsl or project_wide.wgsl wrote with split-K,
// S_z and G_z being the rows of split z. Each element adds its partials in ascending z, so
// the result does not depend on the launch.
//
// Bindings (row-major f32; read_write because CubeCL sub-allocates tensors from shared
// buffers, see burn-0.22.md):
//   @binding(0) partials  splits×r×b: slice z is S_zᵀ·G_z     (read)
//   @binding(1) output    G̃, r×b                              (written)
//
// Template values (part of the kernel id): {{count}} = r·b, {{splits}}, {{workgroups}}
// (the launch's workgroups, at most 65,535; each of the workgroups × 256 invocations takes
// every (workgroups·256)-th element from its own index on).

const COUNT: u32 = {{count}}u;
const SPLITS: u32 = {{splits}}u;
const STRIDE: u32 = {{workgroups}}u * 256u;

@group(0) @binding(0) var<storage, read_write> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i: u32 = gid.x; i < COUNT; i = i + STRIDE) {
        var total: f32 = 0.0;
        for (var z: u32 = 0u; z < SPLITS; z = z + 1u) {
            total = total + partials[z * COUNT + i];
        }
        output[i] = total;
    }
}
