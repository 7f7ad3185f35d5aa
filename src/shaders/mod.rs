//! WGSL sources, embedded at compile time, with a tiny `#import` step.
//!
//! A line `#import shared/NAME` is replaced by `shaders/shared/NAME.wgsl` (once per
//! module). Everything else is plain WGSL, specialized with `override` constants,
//! a few `const` sizes substituted ([`source_with`]), and for
//! `flash_attention_cpu` a body generated per shape (`straight_line.rs`).

mod straight_line;

/// How a storage binding declared with `#storage` holds its elements (the
/// dtype of the tensor bound there, and for f16 the device's storage mode).
/// Every mode reads the same bytes; a kernel sees `NAME_at(i) -> f32` for a
/// read-only binding and `NAME_put(i, x: f32)` for a written one, `i` in
/// elements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Elem {
    /// `array<f32>`.
    #[default]
    F32,
    /// `array<f16>` (`enable f16;`), where the device grants `SHADER_F16`.
    F16,
    /// f16 two per `u32`, unpacked with `unpack2x16float`; stores round in
    /// software (to nearest even, ±inf past 65 504) and write their half of the
    /// word with `atomicAnd` + `atomicOr`, so neighbours owned by other
    /// invocations are never clobbered.
    F16Packed,
    /// bf16 two per `u32`: widened by a shift, rounded to nearest even on store.
    BF16,
}

impl Elem {
    /// The storage mode of `dtype` on a device that does (`native_f16`) or does
    /// not grant `SHADER_F16`.
    pub fn of(dtype: crate::DType, native_f16: bool) -> Elem {
        match dtype {
            crate::DType::F32 => Elem::F32,
            crate::DType::F16 if native_f16 => Elem::F16,
            crate::DType::F16 => Elem::F16Packed,
            crate::DType::BF16 => Elem::BF16,
        }
    }

    /// The declaration and accessors of binding `binding` named `name`.
    fn declare(self, binding: &str, name: &str, write: bool) -> String {
        let access = if write { "read_write" } else { "read" };
        let ty = match (self, write) {
            (Elem::F32, _) => "f32",
            (Elem::F16, _) => "f16",
            (Elem::F16Packed | Elem::BF16, false) => "u32",
            (Elem::F16Packed | Elem::BF16, true) => "atomic<u32>",
        };
        let mut out =
            format!("@group(0) @binding({binding}) var<storage, {access}> {name}: array<{ty}>;\n");
        if !write {
            let body = match self {
                Elem::F32 => format!("return {name}[i];"),
                Elem::F16 => format!("return f32({name}[i]);"),
                Elem::F16Packed => format!(
                    "let h = unpack2x16float({name}[i >> 1u]); return select(h.x, h.y, (i & 1u) != 0u);"
                ),
                Elem::BF16 => format!(
                    "let w = {name}[i >> 1u]; return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) != 0u));"
                ),
            };
            out.push_str(&format!("fn {name}_at(i: u32) -> f32 {{ {body} }}\n"));
            // Packed words: word i raw, and a word's two elements widened.
            let pair = match self {
                Elem::F16Packed => Some("return unpack2x16float(w);"),
                Elem::BF16 => {
                    Some("return vec2(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));")
                }
                _ => None,
            };
            if let Some(pair) = pair {
                out.push_str(&format!(
                    "fn {name}_w(i: u32) -> u32 {{ return {name}[i]; }}\nfn {name}_pair(w: u32) -> vec2<f32> {{ {pair} }}\n"
                ));
            }
        } else {
            let body = match self {
                Elem::F32 => format!("{name}[i] = x;"),
                Elem::F16 => format!("{name}[i] = f16(unpack2x16float(half_bits_f16(x)).x);"),
                Elem::F16Packed | Elem::BF16 => {
                    let bits = if self == Elem::BF16 {
                        "half_bits_bf16"
                    } else {
                        "half_bits_f16"
                    };
                    format!(
                        "let sh = (i & 1u) * 16u; atomicAnd(&{name}[i >> 1u], ~(0xffffu << sh)); atomicOr(&{name}[i >> 1u], {bits}(x) << sh);"
                    )
                }
            };
            out.push_str(&format!("fn {name}_put(i: u32, x: f32) {{ {body} }}\n"));
        }
        out
    }
}

/// What a kernel binds: `true` for each read-only storage buffer, `false` for
/// read-write, in binding order after the uniform block (binding 0). The shader
/// test checks each list against the WGSL declarations.
#[derive(Debug, PartialEq, Eq)]
pub struct KernelSpec {
    /// The kernel's name in [`KERNELS`] (its WGSL file's stem).
    pub name: &'static str,
    /// One entry per storage binding from binding 1 on: `true` = read-only.
    pub storage_read_only: &'static [bool],
}

/// One compiled variant of a kernel: its WGSL file, the module constants
/// substituted into the source (`defines`: sizes of private arrays and the
/// straight-line body's shape, see [`source_with`]) and the pipeline-overridable
/// constants (`overrides`: WGSL `override` values). The pipeline cache keys on
/// it, the plan chooses it, and the shader test validates every one a device can
/// pick (`plan::specializations`).
///
/// ```
/// use wgpu_attention::kernels::flash_attention::SPEC;
/// use wgpu_attention::shaders::{storage_bindings, Elem, Specialization};
/// assert_eq!(storage_bindings("flash_attention"), ["q", "k", "v", "o"]);
/// // The generic fused kernel with K and V held as bf16 (two per u32).
/// let spec = Specialization::new(&SPEC).elems(&[("k", Elem::BF16), ("v", Elem::BF16)]);
/// let wgsl = spec.source();
/// assert!(wgsl.contains("var<storage, read> k: array<u32>;"));
/// assert!(wgsl.contains("fn k_at(i: u32) -> f32"));
/// assert!(wgsl.contains("var<storage, read> q: array<f32>;")); // unnamed: f32
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Specialization {
    /// The kernel (its WGSL file and binding list).
    pub kernel: &'static KernelSpec,
    /// Module constants substituted into the source (see [`source_with`]), in
    /// the order given.
    pub defines: Vec<(&'static str, u32)>,
    /// Pipeline-overridable constants: WGSL `override` name and value.
    pub overrides: Vec<(&'static str, f64)>,
    /// The element storage of each `#storage` binding, by name; unnamed ones
    /// are f32.
    pub elems: Vec<(&'static str, Elem)>,
    /// A caller's score and mask mods ([`crate::mods`]): spliced in after the
    /// kernel, bound as one more storage buffer (`mods`), and switching on the
    /// kernel's `//?SCORE_MOD:`, `//?MASK_MOD:` and `//?MOD_BLOCKS:`
    /// lines.
    pub mods: Option<std::sync::Arc<crate::mods::ModWgsl>>,
}

impl Specialization {
    /// `kernel` with its source's defaults and no overrides.
    pub fn new(kernel: &'static KernelSpec) -> Self {
        Specialization {
            kernel,
            defines: Vec::new(),
            overrides: Vec::new(),
            elems: Vec::new(),
            mods: None,
        }
    }

    /// With a caller's mods (or none).
    pub fn mods(mut self, mods: Option<std::sync::Arc<crate::mods::ModWgsl>>) -> Self {
        self.mods = mods;
        self
    }

    /// The storage bindings' access after the uniform block: the kernel's,
    /// then the mods binding where there are mods (read-write only for the
    /// block-mask kernel, which writes the classes).
    pub fn storage_read_only(&self) -> Vec<bool> {
        let mut v = self.kernel.storage_read_only.to_vec();
        if self.mods.is_some() {
            v.push(self.kernel.name != "block_mask");
        }
        v
    }

    /// With the element storage of `#storage` bindings (F32 entries are
    /// dropped, so an all-f32 specialization equals one without elems).
    pub fn elems(mut self, elems: &[(&'static str, Elem)]) -> Self {
        for &(name, e) in elems {
            self.elems.retain(|(n, _)| *n != name);
            if e != Elem::F32 {
                self.elems.push((name, e));
            }
        }
        self.elems.sort_by_key(|(n, _)| *n);
        self
    }

    /// With module constants substituted.
    pub fn defines(mut self, defines: &[(&'static str, u32)]) -> Self {
        self.defines.extend_from_slice(defines);
        self
    }

    /// With `override` values.
    pub fn overrides(mut self, overrides: &[(&'static str, f64)]) -> Self {
        self.overrides.extend_from_slice(overrides);
        self
    }

    /// The complete WGSL this specialization compiles.
    pub fn source(&self) -> String {
        let Some(m) = &self.mods else {
            return source_full(self.kernel.name, &self.defines, &self.elems);
        };
        let mut consts = self.defines.clone();
        consts.extend(m.flags());
        let mut src = source_full(self.kernel.name, &consts, &self.elems);
        let binding = self.kernel.storage_read_only.len() + 1;
        let access = if self.kernel.name == "block_mask" {
            "read_write"
        } else {
            "read"
        };
        src.push_str(&format!(
            "\n@group(0) @binding({binding}) var<storage, {access}> mods: array<u32>;\n{}",
            m.text
        ));
        src
    }
}

/// Kernels that need a native-only WGSL extension (`enable
/// wgpu_cooperative_matrix;`): never picked where the device lacks the
/// feature, and not given to a browser's WGSL compiler.
pub const NATIVE_ONLY: &[&str] = &["flash_attention_coop"];

/// Every kernel's WGSL, by kernel name.
pub const KERNELS: &[(&str, &str)] = &[
    ("scores", include_str!("../../shaders/scores.wgsl")),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    (
        "weighted_sum",
        include_str!("../../shaders/weighted_sum.wgsl"),
    ),
    ("posenc", include_str!("../../shaders/posenc.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("rope", include_str!("../../shaders/rope.wgsl")),
    ("rms_norm", include_str!("../../shaders/rms_norm.wgsl")),
    (
        "cache_write",
        include_str!("../../shaders/cache_write.wgsl"),
    ),
    (
        "flash_attention",
        include_str!("../../shaders/flash_attention.wgsl"),
    ),
    ("decode", include_str!("../../shaders/decode.wgsl")),
    ("cast", include_str!("../../shaders/cast.wgsl")),
    ("block_mask", include_str!("../../shaders/block_mask.wgsl")),
    (
        "flash_attention_cpu",
        include_str!("../../shaders/flash_attention_cpu.wgsl"),
    ),
    (
        "flash_attention_tiled",
        include_str!("../../shaders/flash_attention_tiled.wgsl"),
    ),
    (
        "flash_attention_coop",
        include_str!("../../shaders/flash_attention_coop.wgsl"),
    ),
];

const SHARED: &[(&str, &str)] = &[
    ("grid", include_str!("../../shaders/shared/grid.wgsl")),
    ("tile_mm", include_str!("../../shaders/shared/tile_mm.wgsl")),
    ("mask", include_str!("../../shaders/shared/mask.wgsl")),
    (
        "mask_words",
        include_str!("../../shaders/shared/mask_words.wgsl"),
    ),
    ("trig", include_str!("../../shaders/shared/trig.wgsl")),
    ("half", include_str!("../../shaders/shared/half.wgsl")),
    (
        "flash_common",
        include_str!("../../shaders/shared/flash_common.wgsl"),
    ),
];

/// [`source`] specialized by `consts`.
///
/// `flash_attention_cpu`: its body is generated from the shape the constants
/// name (`R`, `KB`, `DV`, `S`, `NG`, `B4`; see src/shaders/straight_line.rs) and appended to
/// the file's shared part.
///
/// Every other kernel: each `const NAME: u32 = …;` line whose NAME is in `consts`
/// gets the given value. Only for what `override` cannot express (sizes of
/// function-scope arrays); everything else is an `override`.
///
/// # Panics
/// If a named constant is not declared in the kernel (a build-time fact the test
/// suite checks).
pub fn source_with(name: &str, consts: &[(&str, u32)]) -> String {
    source_full(name, consts, &[])
}

/// [`source_with`], with each `#storage BINDING NAME read|read_write` line
/// expanded for the element storage `elems` names (f32 when absent; see
/// [`Elem`]), and `enable f16;` first when a binding is native f16.
///
/// # Panics
/// As [`source_with`]; also if `elems` names a binding the kernel does not
/// declare with `#storage`.
pub fn source_full(name: &str, consts: &[(&str, u32)], elems: &[(&str, Elem)]) -> String {
    let src = with_consts(name, consts);
    let mut out = String::new();
    if elems.iter().any(|(_, e)| *e == Elem::F16) && !src.lines().any(|l| l.trim() == "enable f16;")
    {
        out.push_str("enable f16;\n");
    }
    for (n, _) in elems {
        assert!(
            src.lines().any(
                |l| l.trim().starts_with("#storage ") && l.split_whitespace().nth(2) == Some(n)
            ),
            "kernel {name} declares no `#storage` binding {n}"
        );
    }
    for line in src.lines() {
        match line.trim().strip_prefix("#storage ") {
            Some(decl) => {
                let parts: Vec<&str> = decl.split_whitespace().collect();
                let [binding, bname, access] = parts[..] else {
                    panic!("kernel {name}: `#storage BINDING NAME ACCESS`, got `{line}`");
                };
                let elem = elems
                    .iter()
                    .find(|(n, _)| *n == bname)
                    .map_or(Elem::F32, |(_, e)| *e);
                out.push_str(&elem.declare(binding, bname, access == "read_write"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The names of kernel `name`'s `#storage` bindings (those whose element
/// storage a [`Specialization`] may set), in declaration order.
pub fn storage_bindings(name: &str) -> Vec<String> {
    resolved(name)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#storage "))
        .filter_map(|d| d.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// The mods' switches ([`crate::mods::ModWgsl`]): conditional lines only,
/// never substituted into a `const`.
const MOD_FLAGS: &[&str] = &["SCORE_MOD", "MASK_MOD", "MOD_BLOCKS"];

/// Conditional lines: a line starting `//?NAME:` is compiled in (the marker
/// removed) when define `NAME` is given and nonzero, one starting `//?!NAME:`
/// when it is not; the other stays a comment. For code that needs what not
/// every device has (subgroup builtins) or that replaces a step (P·V).
fn conditional_lines(src: &str, consts: &[(&str, u32)]) -> String {
    let on = |n: &str| consts.iter().any(|&(c, v)| c == n && v != 0);
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let kept = match line.strip_prefix("//?") {
            None => line,
            Some(rest) => {
                let (negate, rest) = rest.strip_prefix('!').map_or((false, rest), |r| (true, r));
                let (define, code) = rest
                    .split_once(':')
                    .unwrap_or_else(|| panic!("conditional line without `NAME:`: {line}"));
                if on(define) != negate {
                    code
                } else {
                    line
                }
            }
        };
        out.push_str(kept);
        out.push('\n');
    }
    out
}

fn with_consts(name: &str, consts: &[(&str, u32)]) -> String {
    let src = resolved(name);
    let mut src = conditional_lines(&src, consts);
    let mod_blocks = consts.iter().any(|&(c, v)| c == "MOD_BLOCKS" && v != 0);
    let consts: Vec<(&str, u32)> = consts
        .iter()
        .filter(|(c, _)| !MOD_FLAGS.contains(c))
        .copied()
        .collect();
    if name == "flash_attention_cpu" {
        src.push_str(&straight_line::generate(
            straight_line::Shape::from_defines(&consts),
            mod_blocks,
        ));
        return src;
    }
    if name == "flash_attention_coop" {
        // The matrix types follow the tile (wgpu's WGSL names the size in the type).
        if let Some((_, t)) = consts.iter().find(|(c, _)| *c == "T") {
            src = src.replace("coop_mat8x8", &format!("coop_mat{t}x{t}"));
        }
    }
    for (cname, value) in &consts {
        let prefix = format!("const {cname}: u32 = ");
        let start = src
            .find(&prefix)
            .unwrap_or_else(|| panic!("kernel {name} declares no `const {cname}: u32`"));
        let end = start + src[start..].find(';').expect("const line ends with ;");
        src.replace_range(start..end, &format!("{prefix}{value}u"));
    }
    src
}

/// The complete WGSL of kernel `name` with its default constants (for
/// `flash_attention_cpu`, the body of the default shape; see [`source_with`];
/// for `block_mask`, which exists only with a caller's `mask_mod`, with
/// [`crate::mods::example`]'s).
///
/// # Panics
/// If `name` is not a kernel of this crate or an import is unknown (both are
/// build-time facts checked by the test suite).
pub fn source(name: &str) -> String {
    if name == "block_mask" {
        // Nothing to classify without a mask_mod: the example mods'.
        return Specialization::new(&crate::kernels::block_mask::SPEC)
            .mods(Some(crate::mods::example().wgsl().clone()))
            .source();
    }
    source_with(name, &[])
}

/// `name`'s WGSL with its imports resolved, nothing else.
fn resolved(name: &str) -> String {
    let (_, text) = KERNELS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no kernel named {name}"));
    let mut out = String::new();
    let mut seen = Vec::new();
    resolve(text, &mut out, &mut seen);
    out
}

fn resolve(text: &str, out: &mut String, seen: &mut Vec<&'static str>) {
    for line in text.lines() {
        if let Some(path) = line.trim().strip_prefix("#import shared/") {
            let (name, body) = SHARED
                .iter()
                .find(|(n, _)| *n == path.trim())
                .unwrap_or_else(|| panic!("unknown WGSL import shared/{path}"));
            if !seen.contains(name) {
                seen.push(name);
                resolve(body, out, seen);
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subgroup_kernel_names_the_register_and_lane_of_each_element() {
        let src = source_with(
            "flash_attention_cpu",
            &[("R", 1), ("KB", 1), ("DV", 4), ("S", 8), ("NG", 2)],
        );
        assert!(src.contains("@builtin(subgroup_invocation_id) sl: u32"));
        assert!(!src.contains("let k0_0 = vec4(ld_k"), "{src}");
        // Without S: whole-row loads, no subgroup operation or builtin.
        let plain = source_with("flash_attention_cpu", &[("R", 1), ("KB", 1), ("DV", 4)]);
        assert!(
            plain.contains("let k0_0 = vec4(ld_k(kr0, 4u * 0u)"),
            "{plain}"
        );
        assert!(
            !plain.contains("subgroupBroadcast(kl") && !plain.contains("sl: u32"),
            "{plain}"
        );
        // Element 4·3 + 1 = 13 of the row is lane 5 of the second register (G = 1).
        assert!(src.contains("subgroupBroadcast(kl0_1, 5u)"), "{src}");
        assert!(src.contains("let kl0_1 = ld_k(kr0, 1u * S + sl);"), "{src}");
    }

    /// The code part of `src` from `fn main` on.
    fn main_of(src: &str) -> &str {
        &src[src.find("fn main(").expect("a fn main")..]
    }

    /// Representative facts of the generated body: the default shape, one
    /// register per row, key and chunk and nothing past them, one loop, the
    /// loads per key block of each mode, and the vec4 mask reads.
    #[test]
    fn straight_line_body_has_one_register_per_row_key_and_chunk() {
        let src = source("flash_attention_cpu");
        for c in [
            "R: u32 = 8u",
            "KB: u32 = 4u",
            "DV: u32 = 16u",
            "S: u32 = 0u",
            "B4: u32 = 0u",
        ] {
            assert_eq!(src.matches(&format!("const {c};")).count(), 1, "{c}");
        }
        let main = main_of(&src);
        assert!(main.contains("let q7_15 = vec4(ld_q(qr7, 4u * 15u), ld_q(qr7, 4u * 15u + 1u), ld_q(qr7, 4u * 15u + 2u), ld_q(qr7, 4u * 15u + 3u)) * p.scale;"));
        assert!(!main.contains("q8_") && !main.contains("q7_16"));
        assert!(main.contains("let j3 = u32(j0) + 3u;") && !main.contains("let j4 "));
        assert!(main.contains("s7_3 = flash_score(s7_3, w, f7, j3, flash_bias(f7, j3));"));
        assert!(main.contains("o7_15 += p7_3 * v3_15;"));
        assert!(main.contains("let j_start = w.j_lo;") && !main.contains("flash_bias4"));
        // The key-block loop is the only loop.
        assert_eq!(main.matches("for (").count(), 1);
        // Per block: R·KB·DV dot products; whole-row loads of KB·D elements of K and of V.
        assert_eq!(main.matches("dot(").count(), 8 * 4 * 16);
        assert_eq!(main.matches("ld_k(").count(), 4 * 64);
        assert_eq!(main.matches("ld_v(").count(), 4 * 64);

        // lavapipe's default: subgroups of 8, vec4 mask reads. Each lane loads
        // D/S = 8 elements of each key's row; every element is broadcast.
        let sg = source_with(
            "flash_attention_cpu",
            &[
                ("R", 8),
                ("KB", 4),
                ("DV", 16),
                ("S", 8),
                ("NG", 8),
                ("B4", 1),
            ],
        );
        let main = main_of(&sg);
        assert_eq!(main.matches("ld_k(").count(), 4 * 8);
        assert_eq!(main.matches("subgroupBroadcast(").count(), 2 * 4 * 64);
        assert!(main.contains("let kl3_7 = ld_k(kr3, 7u * S + sl);"));
        assert!(main.contains("let bias7 = flash_bias4(f7, u32(j0));"));
        assert!(main.contains("s7_3 = flash_score(s7_3, w, f7, j3, bias7[3]);"));
        assert!(main.contains("let j_start = w.j_lo & ~3;"));
        assert!(!main.contains("flash_bias("));
    }

    #[test]
    #[should_panic(expected = "declares no `const DMAX: u32`")]
    fn straight_line_rejects_an_unknown_define() {
        source_with("flash_attention_cpu", &[("DMAX", 64)]);
    }

    #[test]
    #[should_panic(expected = "NG must be 4·DV / S")]
    fn straight_line_checks_the_element_groups() {
        source_with("flash_attention_cpu", &[("DV", 16), ("S", 8), ("NG", 4)]);
    }
}
