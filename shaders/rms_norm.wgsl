// rms_norm: RMSNorm of each row of x [B, H, N, D] (any strides) over its first
// `count` channels (QK-norm: a head vector; the layer-wide norm: a token row):
//   y_c = x_c / sqrt(mean_{c < count}(x_c²) + eps) · (w_c + w_offset),  c < count
//   y_c = x_c,                                                           c >= count
// (w_offset = 1 for Gemma's (1 + w) weights; channels past count are the zero
// padding of a head wider than D). Output contiguous in the host's strides.
// One workgroup per row: a strided sum of squares, a tree in workgroup memory,
// then a strided write.

#import shared/half
#import shared/grid

override WG: u32 = 64u; // power of two, at most 256

struct Params {
    b: u32, h: u32, n: u32, d: u32,
    count: u32, x_off: u32, eps: f32, w_offset: f32,
    x_sb: u32, x_sh: u32, x_sn: u32, x_sd: u32,
    o_sb: u32, o_sh: u32, o_sn: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#storage 1 x read
@group(0) @binding(2) var<storage, read> w: array<f32>; // [count]
#storage 3 out read_write

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = linear_workgroup(wg, nwg);
    // Every invocation of a workgroup takes the same branch: the barriers below
    // stay in uniform control flow.
    if (row >= p.b * p.h * p.n) {
        return;
    }
    let n = row % p.n;
    let t = row / p.n;
    let h = t % p.h;
    let b = t / p.h;
    let xr = p.x_off + b * p.x_sb + h * p.x_sh + n * p.x_sn;
    let orow = b * p.o_sb + h * p.o_sh + n * p.o_sn;
    var s = 0.0;
    for (var c = lid; c < p.count; c += WG) {
        let v = x_at(xr + c * p.x_sd);
        s += v * v;
    }
    red[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            red[lid] += red[lid + stride];
        }
        workgroupBarrier();
    }
    let inv = inverseSqrt(red[0] / f32(p.count) + p.eps);
    for (var c = lid; c < p.d; c += WG) {
        let v = x_at(xr + c * p.x_sd);
        out_put(orow + c, select(v, v * inv * (w[min(c, p.count - 1u)] + p.w_offset), c < p.count));
    }
}
