// One output tile of a batched product C[bh] = A[bh] · B[bh], in two variants
// chosen by the host per adapter (override STAGED; workgroup size (8, WG_Y, 1)).
//
// The importing shader defines
//   fn load_a(bh: u32, row: u32, k: u32) -> f32   // A[bh][row][k]
//   fn load_b(bh: u32, k: u32, col: u32) -> f32   // B[bh][k][col]
// which are only called with row < m, col < n, k < kdim.
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
                    va = load_a(bh, row0 + rr, kg);
                }
                stage_a[e] = va;
                var vb = 0.0;
                if (col0 + rr < n && kg < kdim) {
                    vb = load_b(bh, kg, col0 + rr);
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
        let r0 = min(row0, last);
        let r1 = min(row0 + 1u, last);
        let r2 = min(row0 + 2u, last);
        let r3 = min(row0 + 3u, last);
        let r4 = min(row0 + 4u, last);
        let r5 = min(row0 + 5u, last);
        let r6 = min(row0 + 6u, last);
        let r7 = min(row0 + 7u, last);
        for (var k = 0u; k < kdim; k++) {
            let b = vec4(load_b(bh, k, c.x), load_b(bh, k, c.y), load_b(bh, k, c.z), load_b(bh, k, c.w));
            acc[0] += load_a(bh, r0, k) * b;
            acc[1] += load_a(bh, r1, k) * b;
            acc[2] += load_a(bh, r2, k) * b;
            acc[3] += load_a(bh, r3, k) * b;
            acc[4] += load_a(bh, r4, k) * b;
            acc[5] += load_a(bh, r5, k) * b;
            acc[6] += load_a(bh, r6, k) * b;
            acc[7] += load_a(bh, r7, k) * b;
        }
    }
    return acc;
}
