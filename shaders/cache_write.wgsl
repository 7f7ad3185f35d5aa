// cache_write: new tokens' keys or values x [n, Hkv, D] (any strides, any dtype)
// into their slots of a paged pool [blocks, block_size, Hkv, D] (the pool's
// dtype, rounded once to nearest even), vLLM's reshape_and_cache: token t goes to
// pool row slots[t] = block · block_size + offset. A pool split over storage
// bindings is written one part at a time: rows outside [row0, row0 + rows) are
// skipped. One invocation per element.

#import shared/half
#import shared/grid

struct Params {
    n: u32, hkv: u32, d: u32, x_off: u32,
    x_sn: u32, x_sh: u32, x_sd: u32, row0: u32,
    rows: u32, total: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#storage 1 x read
@group(0) @binding(2) var<storage, read> slots: array<u32>;
#storage 3 pool read_write

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = linear_workgroup(wg, nwg) * 64u + lid;
    if (idx >= p.total) {
        return;
    }
    let c = idx % p.d;
    let h = (idx / p.d) % p.hkv;
    let t = idx / (p.d * p.hkv);
    let row = slots[t];
    if (row < p.row0 || row - p.row0 >= p.rows) {
        return;
    }
    pool_put(((row - p.row0) * p.hkv + h) * p.d + c, x_at(p.x_off + t * p.x_sn + h * p.x_sh + c * p.x_sd));
}
