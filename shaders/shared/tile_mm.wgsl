// A 32x32 output tile of a batched product C[bh] = A[bh] · B[bh], computed by an
// 8x8 workgroup, each invocation owning a 4x4 block (16 accumulators, so every
// loaded value is reused four times from registers).
//
// The importing shader defines
//   fn load_a(bh: u32, row: u32, k: u32) -> f32   // A[bh][row][k]
//   fn load_b(bh: u32, k: u32, col: u32) -> f32   // B[bh][k][col]
// which are only called with row < m, col < n, k < kdim.
//
// STAGED = true stages KC-deep slices of both tiles through workgroup memory
// (real GPUs: each element is loaded from global memory once per workgroup).
// STAGED = false reads global memory directly: CPU drivers (lavapipe) run a
// workgroup on one thread, where staging only adds copies and barriers.

override STAGED: bool = false;

const TILE: u32 = 32u;
const KC: u32 = 16u;

var<workgroup> stage_a: array<f32, 512>; // [KC][TILE]
var<workgroup> stage_b: array<f32, 512>; // [KC][TILE]

fn fma4(acc: ptr<function, array<vec4<f32>, 4>>, a: vec4<f32>, b: vec4<f32>) {
    (*acc)[0] += a.x * b;
    (*acc)[1] += a.y * b;
    (*acc)[2] += a.z * b;
    (*acc)[3] += a.w * b;
}

fn mm_block(bh: u32, row0: u32, col0: u32, lid: vec3<u32>, m: u32, n: u32, kdim: u32) -> array<vec4<f32>, 4> {
    var acc: array<vec4<f32>, 4>;
    let tr = lid.y * 4u;
    let tc = lid.x * 4u;
    if (STAGED) {
        let li = lid.y * 8u + lid.x;
        for (var k0 = 0u; k0 < kdim; k0 += KC) {
            for (var t = 0u; t < 8u; t++) {
                let e = li + 64u * t;
                let kk = e / TILE;
                let rr = e % TILE;
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
                let o = kk * TILE;
                let a = vec4(stage_a[o + tr], stage_a[o + tr + 1u], stage_a[o + tr + 2u], stage_a[o + tr + 3u]);
                let b = vec4(stage_b[o + tc], stage_b[o + tc + 1u], stage_b[o + tc + 2u], stage_b[o + tc + 3u]);
                fma4(&acc, a, b);
            }
            workgroupBarrier();
        }
    } else {
        // Rows/cols past the edge read the last valid one; the caller skips storing them.
        let r = min(vec4(row0 + tr) + vec4(0u, 1u, 2u, 3u), vec4(m - 1u));
        let c = min(vec4(col0 + tc) + vec4(0u, 1u, 2u, 3u), vec4(n - 1u));
        for (var k = 0u; k < kdim; k++) {
            let a = vec4(load_a(bh, r.x, k), load_a(bh, r.y, k), load_a(bh, r.z, k), load_a(bh, r.w, k));
            let b = vec4(load_b(bh, k, c.x), load_b(bh, k, c.y), load_b(bh, k, c.z), load_b(bh, k, c.w));
            fma4(&acc, a, b);
        }
    }
    return acc;
}
