// cast: out[i] = x[i] for every element i of a rank-4 strided view, converted
// from x's element storage to out's (src/shaders/mod.rs, Elem): widened to f32,
// rounded once to nearest even. Tensor::to_dtype, KV-cache appends (a view of a
// page as out) and the converter tests use it. One invocation per element.

#import shared/half
#import shared/grid

struct Params {
    n0: u32, n1: u32, n2: u32, n3: u32,
    x_off: u32, x_s0: u32, x_s1: u32, x_s2: u32,
    x_s3: u32, o_off: u32, o_s0: u32, o_s1: u32,
    o_s2: u32, o_s3: u32, total: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#storage 1 x read
#storage 2 out read_write

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = linear_workgroup(wg, nwg) * 64u + lid;
    if (idx >= p.total) {
        return;
    }
    let i3 = idx % p.n3;
    let i2 = (idx / p.n3) % p.n2;
    let i1 = (idx / (p.n3 * p.n2)) % p.n1;
    let i0 = idx / (p.n3 * p.n2 * p.n1);
    let src = p.x_off + i0 * p.x_s0 + i1 * p.x_s1 + i2 * p.x_s2 + i3 * p.x_s3;
    let dst = p.o_off + i0 * p.o_s0 + i1 * p.o_s1 + i2 * p.o_s2 + i3 * p.o_s3;
    out_put(dst, x_at(src));
}
