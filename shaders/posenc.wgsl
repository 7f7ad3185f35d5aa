// posenc: out[b,n,c] = x[b,n,c] + PE[offset + n, c], PE = sin(pos·ω_i) on even
// c = 2i, cos(pos·ω_i) on odd c = 2i + 1, ω_i = 10000^(-2i/d_model).
//
// freq[i] holds ω_i/(2π) as 0.64 fixed point; see shared/trig.wgsl for why.

#import shared/half
#import shared/grid
#import shared/trig

struct Params {
    b: u32, n: u32, dm: u32, offset: u32,
    x_off: u32, x_sb: u32, x_sn: u32, x_sc: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#storage 1 x read
@group(0) @binding(2) var<storage, read> freq: array<vec2<u32>>; // (hi, lo)
#storage 3 out read_write

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = linear_workgroup(wg, nwg) * 64u + lid;
    if (idx >= p.b * p.n * p.dm) {
        return;
    }
    let c = idx % p.dm;
    let t = idx / p.dm;
    let n = t % p.n;
    let b = t / p.n;
    let pos = p.offset + n;
    let sc = sincos_position(pos, freq[c / 2u]);
    let pe = select(sc.y, sc.x, (c & 1u) == 0u);
    out_put(idx, x_at(p.x_off + b * p.x_sb + n * p.x_sn + c * p.x_sc) + pe);
}
