//! The straight-line body of `flash_attention_cpu`: its shape constants and
//! `fn main`, written out for one [`Shape`] by ordinary Rust loops.
//!
//! `shaders/flash_attention_cpu.wgsl` holds what every shape shares (imports,
//! `override WG`); [`super::source_with`] appends what [`generate`] returns. The
//! helpers the body calls (`flash_work`, `flash_row`, `flash_score`, `ld_q`,
//! `flash_store4`, …) are in `shaders/shared/flash_common.wgsl`.
//!
//! Why straight-line code: Mesa's NIR (lavapipe/llvmpipe) does not unroll loops
//! over D, and a loop over private arrays both runs slowly and counts against
//! the drivers' cap of 65535 loop iterations per invocation
//! (`Gpu::loop_budget`). So every row, key and vec4 chunk gets a named register
//! and the only loop left is the one over key blocks (≈ 65535·KB keys fit the
//! cap). The drivers' compile time grows with the body (R·KB·DV lines per
//! update) and its registers, which is why the host caps R·DV
//! (`plan::fused::base_variant`).
//!
//! Shape of one invocation (one lane of a workgroup of `WG` lanes):
//! - `R` query rows, so each K/V element loaded feeds R rows;
//! - keys in blocks of `KB`, one online-softmax update per block;
//! - the head-dim bucket as `DV` vec4 chunks (padded Q chunks are zero).
//!
//! Register names, with r a row (0..R), t a key of the block (0..KB), c a vec4
//! chunk (0..DV), g an element group of the subgroup mode (0..NG):
//!
//! | name | what |
//! |---|---|
//! | `f{r}`, `qr{r}` | row r's `FlashRow` and the start of its Q row |
//! | `q{r}_{c}` | chunk c of row r's Q, times the scale |
//! | `o{r}_{c}`, `m{r}`, `l{r}` | row r's output accumulator, running max and sum |
//! | `j{t}`, `kr{t}`, `vr{t}` | key t of the block and the start of its K and V rows |
//! | `k{t}_{c}`, `v{t}_{c}` | chunk c of key t's K and V |
//! | `kl{t}_{g}`, `vl{t}_{g}` | subgroup mode: this lane's element g·S + sl of key t's K and V |
//! | `bias{r}` | B4: row r's additive mask for the block's 4 keys |
//! | `s{r}_{t}`, `p{r}_{t}` | score of (row r, key t) and its softmax weight |
//! | `mb{r}`, `cr{r}` | row r's max after the block and the rescale of what came before |
//!
//! This replaced a line-repeating template (lines of the `.wgsl` file with
//! `@R`/`@T`/`@C`/`@G` markers copied per row, key, chunk and group) and gives
//! the same WGSL outside comments: checked, when it replaced it, for the 264
//! distinct sources of every specialization the device kinds can pick. The tests
//! in `shaders/mod.rs` pin representative facts of the output, and
//! `tests/shaders.rs` validates the shapes the host uses with naga.

use std::fmt::Write;

/// Appends one line of WGSL to a `String`.
macro_rules! emit {
    ($out:expr, $($fmt:tt)*) => {
        writeln!($out, $($fmt)*).expect("writing to a String cannot fail")
    };
}

/// The shape of one straight-line variant, from the specialization's defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// `R`: query rows per invocation.
    pub rows: u32,
    /// `KB`: keys per block of the key loop.
    pub keys: u32,
    /// `DV`: vec4 chunks of the head-dim bucket.
    pub chunks: u32,
    /// `S`: the subgroup size K/V loads are shared across, 0 for whole-row loads.
    pub subgroup: u32,
    /// `B4`: the additive mask read as one vec4 per row and block of 4 keys
    /// (`flash_bias4`; needs KB = 4, the host checks the mask's alignment).
    pub bias4: bool,
    /// `P2`: subgroup mode over K and V stored as halves packed in u32 words
    /// (f16 or bf16): each lane loads whole words (two elements) and each word
    /// is broadcast once, half the gathers and broadcasts of element loads
    /// (needs NG even; the host checks that every K/V row starts at an even
    /// element with unit stride).
    pub pairs: bool,
}

impl Default for Shape {
    /// What `shaders::source("flash_attention_cpu")` compiles: 8 rows, 4 keys,
    /// the 64 bucket, whole-row loads, per-key mask reads.
    fn default() -> Self {
        Shape {
            rows: 8,
            keys: 4,
            chunks: 16,
            subgroup: 0,
            bias4: false,
            pairs: false,
        }
    }
}

impl Shape {
    /// The shape named by `defines` (`R`, `KB`, `DV`, `S`, `NG`, `B4`, as
    /// `FusedVariant::specialization` passes them), the default for the rest.
    ///
    /// # Panics
    /// On a name that is not one of these, and when `NG` is not `4·DV / S` or
    /// `S` does not divide the bucket (build-time facts the tests check).
    pub(crate) fn from_defines(defines: &[(&str, u32)]) -> Shape {
        let mut s = Shape::default();
        let mut groups = None;
        for &(name, value) in defines {
            match name {
                "R" => s.rows = value,
                "KB" => s.keys = value,
                "DV" => s.chunks = value,
                "S" => s.subgroup = value,
                "NG" => groups = Some(value),
                "B4" => s.bias4 = value > 0,
                "P2" => s.pairs = value > 0,
                _ => panic!("kernel flash_attention_cpu declares no `const {name}: u32`"),
            }
        }
        if s.subgroup > 0 {
            assert_eq!(
                4 * s.chunks % s.subgroup,
                0,
                "subgroup {} does not divide the bucket {}",
                s.subgroup,
                4 * s.chunks
            );
        }
        if let Some(ng) = groups {
            assert_eq!(ng, s.groups(), "NG must be 4·DV / S for {s:?}");
        }
        if s.pairs {
            assert!(
                s.subgroup > 0 && s.groups().is_multiple_of(2),
                "P2 needs subgroup loads with NG even: {s:?}"
            );
        }
        s
    }

    /// `NG`: elements of a row each lane loads in the subgroup mode (D / S), 0
    /// without subgroups.
    fn groups(&self) -> u32 {
        (4 * self.chunks).checked_div(self.subgroup).unwrap_or(0)
    }
}

/// The shape constants and `fn main` of `flash_attention_cpu` for `shape`,
/// after a blank line (to follow the `.wgsl` file's text).
///
/// `mod_blocks`: the key loop skips the key blocks a caller's block mask
/// excludes ([`crate::mods`]).
pub(crate) fn generate(shape: Shape, mod_blocks: bool) -> String {
    let mut out = String::with_capacity(64 << 10);
    out.push('\n');
    constants(&mut out, shape);
    out.push('\n');
    main(&mut out, shape, mod_blocks);
    out
}

/// The shape as WGSL constants: `R`, `KB` and `S` appear in the body (the
/// workgroup's rows, the key loop's step, the lane's element of a row), the
/// others document the shape in the compiled source.
#[rustfmt::skip] // one emitted WGSL line per Rust line
fn constants(out: &mut String, s: Shape) {
    emit!(out, "// The shape (src/shaders/straight_line.rs): rows per invocation, keys per block,");
    emit!(out, "// vec4 chunks of D, subgroup size (0 = no subgroup operations), elements of a");
    emit!(out, "// row per lane (D/S), additive mask as one vec4 per row and 4 keys.");
    emit!(out, "const R: u32 = {}u;", s.rows);
    emit!(out, "const KB: u32 = {}u;", s.keys);
    emit!(out, "const DV: u32 = {}u;", s.chunks);
    emit!(out, "const S: u32 = {}u;", s.subgroup);
    emit!(out, "const NG: u32 = {}u;", s.groups());
    emit!(out, "const B4: u32 = {}u;", u32::from(s.bias4));
    emit!(out, "const P2: u32 = {}u;", u32::from(s.pairs));
    if s.pairs {
        for x in ["k", "v"] {
            emit!(out, "");
            emit!(out, "// Word w of row `base` of {} (two elements; base even, unit stride, the", x.to_uppercase());
            emit!(out, "// host checks), clamped to the row's last word.");
            emit!(out, "fn ldw_{x}(base: u32, w: u32) -> u32 {{");
            emit!(out, "    return {x}_w((base >> 1u) + min(w, (p.d - 1u) >> 1u));");
            emit!(out, "}}");
        }
    }
}

/// `vec4(ld(base, 4u * cu), ld(base, 4u * cu + 1u), …)`: chunk c of a row, one
/// scalar load per element.
fn row_chunk(ld: &str, base: &str, c: u32) -> String {
    format!(
        "vec4({ld}({base}, 4u * {c}u), {ld}({base}, 4u * {c}u + 1u), {ld}({base}, 4u * {c}u + 2u), {ld}({base}, 4u * {c}u + 3u))"
    )
}

/// Chunk c of key t's row in the subgroup mode: element e = 4c + i of the row
/// was loaded by lane e % S into its register `{reg}{t}_{e / S}`, and
/// `subgroupBroadcast` hands it to every lane.
fn broadcast_chunk(reg: &str, t: u32, c: u32, subgroup: u32) -> String {
    let lanes: Vec<String> = (4 * c..4 * c + 4)
        .map(|e| {
            format!(
                "subgroupBroadcast({reg}{t}_{}, {}u)",
                e / subgroup,
                e % subgroup
            )
        })
        .collect();
    format!("vec4({})", lanes.join(", "))
}

/// Loads chunk c of every key of the block's K (`x = "k"`) or V (`x = "v"`) rows
/// into `{x}{t}_{c}`, in one of two ways:
///
/// - S = 0: every lane loads whole rows. On gallivm (lavapipe/llvmpipe) a storage
///   load indexed by the key loop is a gather of WG scalar loads even when every
///   lane asks for the same address (only loads from constant addresses outside
///   loops are scalarized), so each element costs WG loads for one value. Used
///   without subgroups (llvmpipe GL) and for decode, where the lanes take
///   different key splits (then each gather is useful).
/// - S > 0 (the adapter's fixed subgroup size, WG = S: the workgroup is one
///   subgroup): lane sl loads elements g·S + sl of each row (S distinct values
///   per gather) and `subgroupBroadcast` hands each to every lane (an extract and
///   a splat): 3x faster on lavapipe (BENCHMARKS.md, v7). The lanes never take
///   different key splits then (the host does not ask for it), so `w.valid` and
///   the key range are the same for the whole subgroup.
fn load_block(out: &mut String, s: Shape, x: &str) {
    let ld = format!("ld_{x}");
    if s.subgroup == 0 {
        for t in 0..s.keys {
            for c in 0..s.chunks {
                let chunk = row_chunk(&ld, &format!("{x}r{t}"), c);
                emit!(out, "        let {x}{t}_{c} = {chunk};");
            }
        }
    } else if s.pairs {
        // Lane sl loads words g·S + sl (elements 2(g·S + sl) and the next).
        for t in 0..s.keys {
            for g in 0..s.groups() / 2 {
                emit!(
                    out,
                    "        let {x}l{t}_{g} = ldw_{x}({x}r{t}, {g}u * S + sl);"
                );
            }
        }
        for t in 0..s.keys {
            for c in 0..s.chunks {
                let half = |w: u32| {
                    format!(
                        "{x}_pair(subgroupBroadcast({x}l{t}_{}, {}u))",
                        w / s.subgroup,
                        w % s.subgroup
                    )
                };
                emit!(
                    out,
                    "        let {x}{t}_{c} = vec4({}, {});",
                    half(2 * c),
                    half(2 * c + 1)
                );
            }
        }
    } else {
        for t in 0..s.keys {
            for g in 0..s.groups() {
                emit!(
                    out,
                    "        let {x}l{t}_{g} = {ld}({x}r{t}, {g}u * S + sl);"
                );
            }
        }
        for t in 0..s.keys {
            for c in 0..s.chunks {
                let chunk = broadcast_chunk(&format!("{x}l"), t, c, s.subgroup);
                emit!(out, "        let {x}{t}_{c} = {chunk};");
            }
        }
    }
}

/// `fn main`: set up each row, then per block of KB keys load K, score, update
/// the online softmax, load V and accumulate; finally store each row.
#[rustfmt::skip] // one emitted WGSL line per Rust line
fn main(out: &mut String, s: Shape, mod_blocks: bool) {
    let Shape { rows, keys, chunks, .. } = s;
    emit!(out, "@compute @workgroup_size(WG, 1, 1)");
    emit!(out, "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,");
    emit!(out, "        @builtin(local_invocation_index) lid: u32,");
    if s.subgroup > 0 {
        emit!(out, "        @builtin(subgroup_invocation_id) sl: u32,");
    }
    emit!(out, "        ) {{");
    emit!(out, "    let w = flash_work(linear_workgroup(wg, nwg), lid, WG, R);");
    emit!(out, "    if (!w.valid) {{");
    emit!(out, "        return;");
    emit!(out, "    }}");

    // Per row: what its scores need besides the key, its Q (scaled once), and
    // the online softmax's state.
    for r in 0..rows {
        emit!(out, "    let f{r} = flash_row(w, w.row0 + {r}u);");
    }
    for r in 0..rows {
        emit!(out, "    let qr{r} = flash_q_row(w, f{r});");
    }
    for r in 0..rows {
        for c in 0..chunks {
            let q = row_chunk("ld_q", &format!("qr{r}"), c);
            emit!(out, "    let q{r}_{c} = {q} * p.scale;");
        }
    }
    for r in 0..rows {
        for c in 0..chunks {
            emit!(out, "    var o{r}_{c} = vec4(0.0);");
        }
    }
    for r in 0..rows {
        emit!(out, "    var m{r} = NEG_BIG;");
    }
    for r in 0..rows {
        emit!(out, "    var l{r} = 0.0;");
    }
    emit!(out, "    let kbase = p.k_off + w.b * p.k_sb + w.hk * p.k_sh;");
    emit!(out, "    let vbase = p.v_off + w.b * p.v_sb + w.hk * p.v_sh;");
    if s.bias4 {
        emit!(out, "    // Aligned blocks: the keys added below j_lo are below every row's f.lo (a");
        emit!(out, "    // window), or the host's split length is a multiple of 4 and there are none.");
        emit!(out, "    let j_start = w.j_lo & ~3;");
    } else {
        emit!(out, "    let j_start = w.j_lo;");
    }

    // The key loop, one block of KB keys per iteration. Key 0's `let j0`
    // shadows the loop variable with the same value as a u32.
    emit!(out, "    for (var j0 = j_start; j0 < w.j_hi; j0 += i32(KB)) {{");
    if mod_blocks {
        emit!(out, "        // The caller's block mask: skip blocks mask_mod excludes, do not evaluate it on full ones.");
        emit!(out, "        let mc = flash_mod_class(w, u32(j0), u32(j0) + KB - 1u);");
        emit!(out, "        if (mc == TILE_EMPTY) {{");
        emit!(out, "            j0 += i32(flash_mod_skip(u32(j0), KB));");
        emit!(out, "            continue;");
        emit!(out, "        }}");
        emit!(out, "        mod_full = mc == TILE_FULL;");
    }
    emit!(out, "        // Other pool parts' keys (a pool split over bindings): skipped whole.");
    emit!(out, "        if (PAGED_PARTS && !flash_in_part(w, u32(j0), u32(j0) + KB - 1u)) {{");
    emit!(out, "            j0 += i32(flash_part_skip(w, u32(j0), KB));");
    emit!(out, "            continue;");
    emit!(out, "        }}");
    for t in 0..keys {
        emit!(out, "        let j{t} = u32(j0) + {t}u;");
    }
    if s.bias4 {
        for r in 0..rows {
            emit!(out, "        let bias{r} = flash_bias4(f{r}, u32(j0));");
        }
    }
    // Keys past Nk read the last row (valid memory); flash_score excludes them.
    for t in 0..keys {
        emit!(out, "        let kj{t} = flash_key(w, min(j{t}, p.nk - 1u));");
    }
    for t in 0..keys {
        emit!(out, "        let kr{t} = kbase + kj{t} * p.k_sn;");
    }
    for t in 0..keys {
        emit!(out, "        let vr{t} = vbase + kj{t} * p.v_sn;");
    }
    load_block(out, s, "k");

    // Scores: q·k over the chunks, then softcap, masks and biases.
    for r in 0..rows {
        for t in 0..keys {
            emit!(out, "        var s{r}_{t} = 0.0;");
        }
    }
    for r in 0..rows {
        for t in 0..keys {
            for c in 0..chunks {
                emit!(out, "        s{r}_{t} += dot(q{r}_{c}, k{t}_{c});");
            }
        }
    }
    for r in 0..rows {
        for t in 0..keys {
            let bias = if s.bias4 {
                format!("bias{r}[{t}]")
            } else {
                format!("flash_bias(f{r}, j{t})")
            };
            emit!(out, "        s{r}_{t} = flash_score(s{r}_{t}, w, f{r}, j{t}, {bias});");
        }
    }

    // Online softmax, once per block: the new max, the rescale of the running
    // sum, and each key's weight (0 for an excluded key).
    for r in 0..rows {
        emit!(out, "        var mb{r} = m{r};");
    }
    for r in 0..rows {
        for t in 0..keys {
            emit!(out, "        mb{r} = max(mb{r}, s{r}_{t});");
        }
    }
    for r in 0..rows {
        emit!(out, "        let cr{r} = exp(m{r} - mb{r});");
    }
    for r in 0..rows {
        for t in 0..keys {
            emit!(out, "        let p{r}_{t} = select(0.0, exp(s{r}_{t} - mb{r}), s{r}_{t} > MASKED);");
        }
    }
    for r in 0..rows {
        emit!(out, "        l{r} = l{r} * cr{r};");
    }
    for r in 0..rows {
        for t in 0..keys {
            emit!(out, "        l{r} += p{r}_{t};");
        }
    }
    for r in 0..rows {
        emit!(out, "        m{r} = mb{r};");
    }

    // Output: rescale the accumulators, add each key's weighted V.
    load_block(out, s, "v");
    for r in 0..rows {
        for c in 0..chunks {
            emit!(out, "        o{r}_{c} *= cr{r};");
        }
    }
    for r in 0..rows {
        for t in 0..keys {
            for c in 0..chunks {
                emit!(out, "        o{r}_{c} += p{r}_{t} * v{t}_{c};");
            }
        }
    }
    emit!(out, "    }}");

    for r in 0..rows {
        for c in 0..chunks {
            emit!(out, "    flash_store4(w, f{r}, 4u * {c}u, o{r}_{c}, m{r}, l{r});");
        }
    }
    for r in 0..rows {
        emit!(out, "    flash_store_lse(w, f{r}, m{r}, l{r});");
    }
    emit!(out, "}}");
}
