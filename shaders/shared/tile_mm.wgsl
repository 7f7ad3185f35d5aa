// One output tile of a batched product C[bh] = A[bh] · B[bh], in two variants
// chosen by the host per adapter (override STAGED; workgroup size (8, WG_Y, 1)).
//
// The importing shader defines element addressing that is linear in k:
//   fn a_base(bh: u32, row: u32) -> u32   fn a_kstride() -> u32   fn a_at(i: u32) -> f32
//   fn b_base(bh: u32, col: u32) -> u32   fn b_kstride() -> u32   fn b_at(i: u32) -> f32
// so A[bh][row][k] = a_at(a_base(bh, row) + k * a_kstride()), likewise B[bh][k][col];
// only called with row < m, col < n, k < kdim. Bases are computed once per tile,
// not per k-step.
//
// Columns: invocation x of a row of 8 owns columns col0 + x + 8t, t = 0..3 (32
// columns per tile), so the 8 lanes of a SIMD batch read 8 consecutive B elements.
//
// STAGED = false (CPU drivers such as lavapipe, WG_Y = 1): a workgroup is one SIMD
// batch of 8 lanes on one CPU thread. All lanes share the tile's 8 rows, so every
// A load has an address uniform across the workgroup (a scalar load + broadcast)
// and feeds 4 FMAs per lane; each B load feeds 8. 32 accumulators per lane,
// straight-line code (loops over private arrays compile badly there).
//
// STAGED = true (real GPUs, WG_Y = 8): 64 invocations, 4 rows each (32 rows per
// tile); KC-deep slices of both tiles are staged in workgroup memory (4 KiB), so
// each element is loaded from global memory once per workgroup.

override STAGED: bool = false;
override WG_Y: u32 = 1u;

const TILE_N: u32 = 32u;
const KC: u32 = 16u;

var<workgroup> stage_a: array<f32, 512>; // [KC][32 rows]
var<workgroup> stage_b: array<f32, 512>; // [KC][32 cols]

// Rows of the tile owned by each invocation, and rows per tile.
fn rows_per_invocation() -> u32 {
    return select(8u, 4u, STAGED);
}

fn tile_m() -> u32 {
    return rows_per_invocation() * WG_Y;
}

// acc[i][t] is C[row0 + lid.y * rows_per_invocation() + i][col0 + lid.x + 8t].
fn mm_block(bh: u32, row0: u32, col0: u32, lid: vec3<u32>, m: u32, n: u32, kdim: u32) -> array<vec4<f32>, 8> {
    var acc: array<vec4<f32>, 8>;
    if (STAGED) {
        let li = lid.y * 8u + lid.x;
        let tr = lid.y * 4u;
        for (var k0 = 0u; k0 < kdim; k0 += KC) {
            for (var t = 0u; t < 8u; t++) {
                let e = li + 64u * t;
                let kk = e / 32u;
                let rr = e % 32u;
                let kg = k0 + kk;
                var va = 0.0;
                if (row0 + rr < m && kg < kdim) {
                    va = a_at(a_base(bh, row0 + rr) + kg * a_kstride());
                }
                stage_a[e] = va;
                var vb = 0.0;
                if (col0 + rr < n && kg < kdim) {
                    vb = b_at(b_base(bh, col0 + rr) + kg * b_kstride());
                }
                stage_b[e] = vb;
            }
            workgroupBarrier();
            for (var kk = 0u; kk < KC; kk++) {
                let o = kk * 32u;
                let b = vec4(stage_b[o + lid.x], stage_b[o + lid.x + 8u], stage_b[o + lid.x + 16u], stage_b[o + lid.x + 24u]);
                acc[0] += stage_a[o + tr] * b;
                acc[1] += stage_a[o + tr + 1u] * b;
                acc[2] += stage_a[o + tr + 2u] * b;
                acc[3] += stage_a[o + tr + 3u] * b;
            }
            workgroupBarrier();
        }
    } else {
        // Rows/cols past the edge read the last valid one; the caller skips storing them.
        let c = min(vec4(col0 + lid.x) + vec4(0u, 8u, 16u, 24u), vec4(n - 1u));
        let last = m - 1u;
        let a0 = a_base(bh, min(row0, last));
        let a1 = a_base(bh, min(row0 + 1u, last));
        let a2 = a_base(bh, min(row0 + 2u, last));
        let a3 = a_base(bh, min(row0 + 3u, last));
        let a4 = a_base(bh, min(row0 + 4u, last));
        let a5 = a_base(bh, min(row0 + 5u, last));
        let a6 = a_base(bh, min(row0 + 6u, last));
        let a7 = a_base(bh, min(row0 + 7u, last));
        let bb = vec4(b_base(bh, c.x), b_base(bh, c.y), b_base(bh, c.z), b_base(bh, c.w));
        let sa = a_kstride();
        let sb = b_kstride();
        for (var k = 0u; k < kdim; k++) {
            let ka = k * sa;
            let kb = bb + vec4(k * sb);
            let b = vec4(b_at(kb.x), b_at(kb.y), b_at(kb.z), b_at(kb.w));
            acc[0] += a_at(a0 + ka) * b;
            acc[1] += a_at(a1 + ka) * b;
            acc[2] += a_at(a2 + ka) * b;
            acc[3] += a_at(a3 + ka) * b;
            acc[4] += a_at(a4 + ka) * b;
            acc[5] += a_at(a5 + ka) * b;
            acc[6] += a_at(a6 + ka) * b;
            acc[7] += a_at(a7 + ka) * b;
        }
    }
    return acc;
}
