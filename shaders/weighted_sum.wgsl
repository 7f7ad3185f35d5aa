// weighted_sum: O[b,h,i,c] = Σ_j P[b,h,i,j] · V[b,h/g,j,c]
// P is contiguous [B, Hq, Nq, Nk]; V and O are addressed through strides.

#import shared/half
#import shared/grid
#import shared/tile_mm

struct Params {
    b: u32, hq: u32, group: u32, nq: u32,
    nk: u32, d: u32, tiles_m: u32, tiles_n: u32,
    v_off: u32, v_sb: u32, v_sh: u32, v_sn: u32,
    v_sd: u32, o_off: u32, o_sb: u32, o_sh: u32,
    o_sn: u32, o_sd: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pw: array<f32>;
#storage 2 v read
#storage 3 o read_write

// A = P[b, h] (rows i, k = j, contiguous); B = V[b, h/g] (k = j, cols d).
fn a_base(bh: u32, row: u32) -> u32 { return (bh * p.nq + row) * p.nk; }
fn a_kstride() -> u32 { return 1u; }
fn a_at(i: u32) -> f32 { return pw[i]; }
fn b_base(bh: u32, col: u32) -> u32 { return p.v_off + (bh / p.hq) * p.v_sb + ((bh % p.hq) / p.group) * p.v_sh + col * p.v_sd; }
fn b_kstride() -> u32 { return p.v_sn; }
fn b_at(i: u32) -> f32 { return v_at(i); }

@compute @workgroup_size(8, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let wid = linear_workgroup(wg, nwg);
    let per_bh = p.tiles_m * p.tiles_n;
    let bh = wid / per_bh;
    if (bh >= p.b * p.hq) {
        return;
    }
    let t = wid % per_bh;
    let row0 = (t / p.tiles_n) * tile_m();
    let col0 = (t % p.tiles_n) * tile_n();
    let acc = mm_block(bh, row0, col0, lid, p.nq, p.d, p.nk);
    let b = bh / p.hq;
    let h = bh % p.hq;
    var accv = acc;
    let rpi = rows_per_invocation();
    for (var ii = 0u; ii < rpi; ii++) {
        let row = row0 + lid.y * rpi + ii;
        for (var jj = 0u; jj < cols_per_invocation(); jj++) {
            let col = col0 + lid.x + 8u * jj;
            if (row < p.nq && col < p.d) {
                o_put(p.o_off + b * p.o_sb + h * p.o_sh + row * p.o_sn + col * p.o_sd, acc_at(&accv, ii, jj));
            }
        }
    }
}
