// One output tile of a batched product C[bh] = A[bh] · B[bh], in variants chosen
// by the host per adapter (overrides STAGED, CPU_ROWS; workgroup size (8, WG_Y, 1)).
//
// The importing shader defines element addressing that is linear in k:
//   fn a_base(bh: u32, row: u32) -> u32   fn a_kstride() -> u32   fn a_at(i: u32) -> f32
//   fn b_base(bh: u32, col: u32) -> u32   fn b_kstride() -> u32   fn b_at(i: u32) -> f32
// so A[bh][row][k] = a_at(a_base(bh, row) + k * a_kstride()), likewise B[bh][k][col];
// only called with row < m, col < n, k < kdim. Bases are computed once per tile,
// not per k-step.
//
// Columns: invocation x of a row of 8 owns columns col0 + x + 8t, so the 8 lanes
// of a SIMD batch read 8 consecutive B elements.
//
// STAGED = false (CPU drivers such as lavapipe, WG_Y = 1): a workgroup is one SIMD
// batch of 8 lanes on one CPU thread. All lanes share the tile's CPU_ROWS rows, so
// every A load has an address uniform across the workgroup (a scalar load +
// broadcast); each lane owns 32 / CPU_ROWS columns (gathered B loads). 32
// accumulators per lane in every shape, straight-line code (loops over private
// arrays compile badly there). CPU_ROWS = 8, 16 or 32.
//
// STAGED = true (real GPUs, WG_Y = 8): 64 invocations with 4x4 outputs each (a
// 32x32 tile); KC-deep slices of both tiles are staged in workgroup memory (4 KiB),
// so each element is loaded from global memory once per workgroup.
//
// Accumulator e = i * cols_per_invocation() + t holds the output at local row i,
// column slot t: acc[e / 4][e % 4].

override STAGED: bool = false;
override WG_Y: u32 = 1u;
override CPU_ROWS: u32 = 8u;

const KC: u32 = 16u;

var<workgroup> stage_a: array<f32, 512>; // [KC][32 rows]
var<workgroup> stage_b: array<f32, 512>; // [KC][32 cols]

fn rows_per_invocation() -> u32 {
    return select(CPU_ROWS, 4u, STAGED);
}

fn cols_per_invocation() -> u32 {
    return select(32u / CPU_ROWS, 4u, STAGED);
}

fn tile_m() -> u32 {
    return rows_per_invocation() * WG_Y;
}

fn tile_n() -> u32 {
    return 8u * cols_per_invocation();
}

// Output element of accumulator slot (i, t): C[row0 + lid.y * rows_per_invocation() + i][col0 + lid.x + 8t].
fn acc_at(acc: ptr<function, array<vec4<f32>, 8>>, i: u32, t: u32) -> f32 {
    let e = i * cols_per_invocation() + t;
    return (*acc)[e / 4u][e % 4u];
}

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
    } else if (CPU_ROWS == 32u) {
        mm_cpu_32x1(&acc, bh, row0, col0, lid, m, n, kdim);
    } else if (CPU_ROWS == 16u) {
        mm_cpu_16x2(&acc, bh, row0, col0, lid, m, n, kdim);
    } else {
        mm_cpu_8x4(&acc, bh, row0, col0, lid, m, n, kdim);
    }
    return acc;
}

// The CPU shapes. Rows/cols past the edge read the last valid one; the caller
// skips storing them.

fn mm_cpu_8x4(acc: ptr<function, array<vec4<f32>, 8>>, bh: u32, row0: u32, col0: u32, lid: vec3<u32>, m: u32, n: u32, kdim: u32) {
    let last = m - 1u;
    let a0 = a_base(bh, min(row0 + 0u, last));
    let a1 = a_base(bh, min(row0 + 1u, last));
    let a2 = a_base(bh, min(row0 + 2u, last));
    let a3 = a_base(bh, min(row0 + 3u, last));
    let a4 = a_base(bh, min(row0 + 4u, last));
    let a5 = a_base(bh, min(row0 + 5u, last));
    let a6 = a_base(bh, min(row0 + 6u, last));
    let a7 = a_base(bh, min(row0 + 7u, last));
    let c = min(vec4(col0 + lid.x) + vec4(0u, 8u, 16u, 24u), vec4(n - 1u));
    let bb = vec4(b_base(bh, c.x), b_base(bh, c.y), b_base(bh, c.z), b_base(bh, c.w));
    let sa = a_kstride();
    let sb = b_kstride();
    for (var k = 0u; k < kdim; k++) {
        let ka = k * sa;
        let kb = bb + vec4(k * sb);
        let b = vec4(b_at(kb.x), b_at(kb.y), b_at(kb.z), b_at(kb.w));
        (*acc)[0] += a_at(a0 + ka) * b;
        (*acc)[1] += a_at(a1 + ka) * b;
        (*acc)[2] += a_at(a2 + ka) * b;
        (*acc)[3] += a_at(a3 + ka) * b;
        (*acc)[4] += a_at(a4 + ka) * b;
        (*acc)[5] += a_at(a5 + ka) * b;
        (*acc)[6] += a_at(a6 + ka) * b;
        (*acc)[7] += a_at(a7 + ka) * b;
    }
}

fn mm_cpu_16x2(acc: ptr<function, array<vec4<f32>, 8>>, bh: u32, row0: u32, col0: u32, lid: vec3<u32>, m: u32, n: u32, kdim: u32) {
    let last = m - 1u;
    let a0 = a_base(bh, min(row0 + 0u, last));
    let a1 = a_base(bh, min(row0 + 1u, last));
    let a2 = a_base(bh, min(row0 + 2u, last));
    let a3 = a_base(bh, min(row0 + 3u, last));
    let a4 = a_base(bh, min(row0 + 4u, last));
    let a5 = a_base(bh, min(row0 + 5u, last));
    let a6 = a_base(bh, min(row0 + 6u, last));
    let a7 = a_base(bh, min(row0 + 7u, last));
    let a8 = a_base(bh, min(row0 + 8u, last));
    let a9 = a_base(bh, min(row0 + 9u, last));
    let a10 = a_base(bh, min(row0 + 10u, last));
    let a11 = a_base(bh, min(row0 + 11u, last));
    let a12 = a_base(bh, min(row0 + 12u, last));
    let a13 = a_base(bh, min(row0 + 13u, last));
    let a14 = a_base(bh, min(row0 + 14u, last));
    let a15 = a_base(bh, min(row0 + 15u, last));
    let c = min(vec2(col0 + lid.x) + vec2(0u, 8u), vec2(n - 1u));
    let bb = vec2(b_base(bh, c.x), b_base(bh, c.y));
    let sa = a_kstride();
    let sb = b_kstride();
    // Accumulator slots e = 2i + t: rows 2j and 2j+1 share acc[j].
    for (var k = 0u; k < kdim; k++) {
        let ka = k * sa;
        let kb = bb + vec2(k * sb);
        let b = vec2(b_at(kb.x), b_at(kb.y));
        let bb4 = vec4(b, b);
        (*acc)[0] += vec4(vec2(a_at(a0 + ka)), vec2(a_at(a1 + ka))) * bb4;
        (*acc)[1] += vec4(vec2(a_at(a2 + ka)), vec2(a_at(a3 + ka))) * bb4;
        (*acc)[2] += vec4(vec2(a_at(a4 + ka)), vec2(a_at(a5 + ka))) * bb4;
        (*acc)[3] += vec4(vec2(a_at(a6 + ka)), vec2(a_at(a7 + ka))) * bb4;
        (*acc)[4] += vec4(vec2(a_at(a8 + ka)), vec2(a_at(a9 + ka))) * bb4;
        (*acc)[5] += vec4(vec2(a_at(a10 + ka)), vec2(a_at(a11 + ka))) * bb4;
        (*acc)[6] += vec4(vec2(a_at(a12 + ka)), vec2(a_at(a13 + ka))) * bb4;
        (*acc)[7] += vec4(vec2(a_at(a14 + ka)), vec2(a_at(a15 + ka))) * bb4;
    }
}

fn mm_cpu_32x1(acc: ptr<function, array<vec4<f32>, 8>>, bh: u32, row0: u32, col0: u32, lid: vec3<u32>, m: u32, n: u32, kdim: u32) {
    let last = m - 1u;
    let a0 = a_base(bh, min(row0 + 0u, last));
    let a1 = a_base(bh, min(row0 + 1u, last));
    let a2 = a_base(bh, min(row0 + 2u, last));
    let a3 = a_base(bh, min(row0 + 3u, last));
    let a4 = a_base(bh, min(row0 + 4u, last));
    let a5 = a_base(bh, min(row0 + 5u, last));
    let a6 = a_base(bh, min(row0 + 6u, last));
    let a7 = a_base(bh, min(row0 + 7u, last));
    let a8 = a_base(bh, min(row0 + 8u, last));
    let a9 = a_base(bh, min(row0 + 9u, last));
    let a10 = a_base(bh, min(row0 + 10u, last));
    let a11 = a_base(bh, min(row0 + 11u, last));
    let a12 = a_base(bh, min(row0 + 12u, last));
    let a13 = a_base(bh, min(row0 + 13u, last));
    let a14 = a_base(bh, min(row0 + 14u, last));
    let a15 = a_base(bh, min(row0 + 15u, last));
    let a16 = a_base(bh, min(row0 + 16u, last));
    let a17 = a_base(bh, min(row0 + 17u, last));
    let a18 = a_base(bh, min(row0 + 18u, last));
    let a19 = a_base(bh, min(row0 + 19u, last));
    let a20 = a_base(bh, min(row0 + 20u, last));
    let a21 = a_base(bh, min(row0 + 21u, last));
    let a22 = a_base(bh, min(row0 + 22u, last));
    let a23 = a_base(bh, min(row0 + 23u, last));
    let a24 = a_base(bh, min(row0 + 24u, last));
    let a25 = a_base(bh, min(row0 + 25u, last));
    let a26 = a_base(bh, min(row0 + 26u, last));
    let a27 = a_base(bh, min(row0 + 27u, last));
    let a28 = a_base(bh, min(row0 + 28u, last));
    let a29 = a_base(bh, min(row0 + 29u, last));
    let a30 = a_base(bh, min(row0 + 30u, last));
    let a31 = a_base(bh, min(row0 + 31u, last));
    let bcol = b_base(bh, min(col0 + lid.x, n - 1u));
    let sa = a_kstride();
    let sb = b_kstride();
    // Accumulator slot e = i: rows 4j..4j+3 share acc[j].
    for (var k = 0u; k < kdim; k++) {
        let ka = k * sa;
        let b = b_at(bcol + k * sb);
        (*acc)[0] += vec4(a_at(a0 + ka), a_at(a1 + ka), a_at(a2 + ka), a_at(a3 + ka)) * b;
        (*acc)[1] += vec4(a_at(a4 + ka), a_at(a5 + ka), a_at(a6 + ka), a_at(a7 + ka)) * b;
        (*acc)[2] += vec4(a_at(a8 + ka), a_at(a9 + ka), a_at(a10 + ka), a_at(a11 + ka)) * b;
        (*acc)[3] += vec4(a_at(a12 + ka), a_at(a13 + ka), a_at(a14 + ka), a_at(a15 + ka)) * b;
        (*acc)[4] += vec4(a_at(a16 + ka), a_at(a17 + ka), a_at(a18 + ka), a_at(a19 + ka)) * b;
        (*acc)[5] += vec4(a_at(a20 + ka), a_at(a21 + ka), a_at(a22 + ka), a_at(a23 + ka)) * b;
        (*acc)[6] += vec4(a_at(a24 + ka), a_at(a25 + ka), a_at(a26 + ka), a_at(a27 + ka)) * b;
        (*acc)[7] += vec4(a_at(a28 + ka), a_at(a29 + ka), a_at(a30 + ka), a_at(a31 + ka)) * b;
    }
}
