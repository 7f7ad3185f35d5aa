// matmul: C[b] = A[b] · B[b] (+ bias) for any M, N, K, batched, every operand
// addressed through strides (a transpose is a stride swap; a batch stride of 0
// broadcasts, e.g. one weight matrix for every batch). C is contiguous.

#import shared/half
#import shared/grid
#import shared/tile_mm

struct Params {
    batch: u32, m: u32, n: u32, k: u32,
    tiles_m: u32, tiles_n: u32, has_bias: u32, bias_off: u32,
    a_off: u32, a_sb: u32, a_sm: u32, a_sk: u32,
    b_off: u32, b_sb: u32, b_sk: u32, b_sn: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#storage 1 a read
#storage 2 b read
#storage 3 bias read
#storage 4 c read_write

fn a_base(bi: u32, row: u32) -> u32 { return p.a_off + bi * p.a_sb + row * p.a_sm; }
fn a_kstride() -> u32 { return p.a_sk; }
fn b_base(bi: u32, col: u32) -> u32 { return p.b_off + bi * p.b_sb + col * p.b_sn; }
fn b_kstride() -> u32 { return p.b_sk; }

@compute @workgroup_size(8, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let wid = linear_workgroup(wg, nwg);
    let per_batch = p.tiles_m * p.tiles_n;
    let bi = wid / per_batch;
    if (bi >= p.batch) {
        return;
    }
    let t = wid % per_batch;
    let row0 = (t / p.tiles_n) * tile_m();
    let col0 = (t % p.tiles_n) * tile_n();
    let acc = mm_block(bi, row0, col0, lid, p.m, p.n, p.k);
    var accv = acc;
    let rpi = rows_per_invocation();
    for (var ii = 0u; ii < rpi; ii++) {
        let row = row0 + lid.y * rpi + ii;
        for (var jj = 0u; jj < cols_per_invocation(); jj++) {
            let col = col0 + lid.x + 8u * jj;
            if (row < p.m && col < p.n) {
                var v = acc_at(&accv, ii, jj);
                if (p.has_bias != 0u) {
                    v += bias_at(p.bias_off + col);
                }
                c_put((bi * p.m + row) * p.n + col, v);
            }
        }
    }
}
