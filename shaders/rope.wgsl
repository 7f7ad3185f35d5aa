// rope: rotary position embedding of Q or K [B, H, N, D] (any strides), output
// contiguous in the input's layout (BHND or BNHD, chosen by the host strides).
// Channel pairs (c1, c2) rotate by pos·ω_i (ω_i from the host's table, with any
// frequency scaling), pos = offset + n or positions[b·N + n] (per-token position
// ids), R = rotary dims (even, <= D; channels from R on pass through), and the
// rotated channels are multiplied by mscale (YaRN / LongRoPE attention factor):
//   half split (GPT-NeoX, Llama): pair i = (i, i + R/2)
//   interleaved (GPT-J):          pair i = (2i, 2i + 1)
//   x1' = x1·cos − x2·sin,  x2' = x1·sin + x2·cos

#import shared/half
#import shared/grid
#import shared/trig

struct Params {
    b: u32, h: u32, n: u32, d: u32,
    offset: u32, rot: u32, interleaved: u32, x_off: u32,
    x_sb: u32, x_sh: u32, x_sn: u32, x_sd: u32,
    o_sb: u32, o_sh: u32, o_sn: u32, has_ids: u32,
    mscale: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#storage 1 x read
@group(0) @binding(2) var<storage, read> freq: array<vec2<u32>>; // θ_i/(2π), 0.64 fixed point
#storage 3 out read_write
@group(0) @binding(4) var<storage, read> positions: array<u32>; // [B, N], when has_ids

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = linear_workgroup(wg, nwg) * 64u + lid;
    if (idx >= p.b * p.h * p.n * p.d) {
        return;
    }
    let c = idx % p.d;
    var t = idx / p.d;
    let n = t % p.n;
    t = t / p.n;
    let h = t % p.h;
    let b = t / p.h;
    let row = p.x_off + b * p.x_sb + h * p.x_sh + n * p.x_sn;
    let o = b * p.o_sb + h * p.o_sh + n * p.o_sn + c;
    if (c >= p.rot) {
        out_put(o, x_at(row + c * p.x_sd));
        return;
    }
    let half = p.rot / 2u;
    var i: u32;
    var c1: u32;
    var c2: u32;
    if (p.interleaved != 0u) {
        i = c / 2u;
        c1 = 2u * i;
        c2 = c1 + 1u;
    } else {
        i = c % half;
        c1 = i;
        c2 = i + half;
    }
    let x1 = x_at(row + c1 * p.x_sd);
    let x2 = x_at(row + c2 * p.x_sd);
    var pos = p.offset + n;
    if (p.has_ids != 0u) {
        pos = positions[b * p.n + n];
    }
    let sc = sincos_position(pos, freq[i]) * p.mscale;
    out_put(o, select(x1 * sc.x + x2 * sc.y, x1 * sc.y - x2 * sc.x, c == c1));
}
