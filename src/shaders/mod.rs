//! WGSL sources, embedded at compile time, with a tiny `#import` step.
//!
//! A line `#import shared/NAME` is replaced by `shaders/shared/NAME.wgsl` (once per
//! module). Everything else is plain WGSL, specialized with `override` constants.

/// What a kernel binds: `true` for each read-only storage buffer, `false` for
/// read-write, in binding order after the uniform block (binding 0). The shader
/// test checks each list against the WGSL declarations.
#[derive(Debug, PartialEq, Eq)]
pub struct KernelSpec {
    pub name: &'static str,
    pub storage_read_only: &'static [bool],
}

/// One compiled variant of a kernel: its WGSL file, the module constants
/// substituted into the source (`defines`: sizes of private arrays and the
/// straight-line body's shape, see [`source_with`]) and the pipeline-overridable
/// constants (`overrides`: WGSL `override` values). The pipeline cache keys on
/// it, the plan chooses it, and the shader test validates every one a device can
/// pick (`plan::specializations`).
#[derive(Clone, Debug, PartialEq)]
pub struct Specialization {
    pub kernel: &'static KernelSpec,
    pub defines: Vec<(&'static str, u32)>,
    pub overrides: Vec<(&'static str, f64)>,
}

impl Specialization {
    /// `kernel` with its source's defaults and no overrides.
    pub fn new(kernel: &'static KernelSpec) -> Self {
        Specialization {
            kernel,
            defines: Vec::new(),
            overrides: Vec::new(),
        }
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
        source_with(self.kernel.name, &self.defines)
    }
}

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
    (
        "flash_attention",
        include_str!("../../shaders/flash_attention.wgsl"),
    ),
    ("decode", include_str!("../../shaders/decode.wgsl")),
    (
        "flash_attention_cpu",
        include_str!("../../shaders/flash_attention_cpu.wgsl"),
    ),
    (
        "flash_attention_tiled",
        include_str!("../../shaders/flash_attention_tiled.wgsl"),
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
    (
        "flash_common",
        include_str!("../../shaders/shared/flash_common.wgsl"),
    ),
];

/// [`source`] with module constants replaced: each `const NAME: u32 = …;` line
/// whose NAME is in `consts` gets the given value. Only for what `override` cannot
/// express (sizes of function-scope arrays, straight-line code); everything else
/// is an `override`.
///
/// Straight-line code: in a kernel that declares `const R`, `const KB` and
/// `const DV`, every line that contains `@R`, `@T` or `@C` (and `@G` with
/// `const NG`) is repeated for each value of those markers (0..R, 0..KB, 0..DV,
/// 0..NG, nested in that order, with the values the constants hold after
/// substitution) with the marker replaced by the number. Lines starting
/// `@if(NAME)` are kept only when `const NAME` is above 0, `@if(!NAME)` only when
/// it is 0; `@S` is S's value and `@{expr}` an integer expression evaluated last.
/// So the result is always plain WGSL.
///
/// # Panics
/// If a named constant is not declared in the kernel (a build-time fact the test
/// suite checks).
pub fn source_with(name: &str, consts: &[(&str, u32)]) -> String {
    let mut src = resolved(name);
    for (cname, value) in consts {
        let prefix = format!("const {cname}: u32 = ");
        let start = src
            .find(&prefix)
            .unwrap_or_else(|| panic!("kernel {name} declares no `const {cname}: u32`"));
        let end = start + src[start..].find(';').expect("const line ends with ;");
        src.replace_range(start..end, &format!("{prefix}{value}u"));
    }
    if let (Some(r), Some(kb), Some(dv)) = (
        const_value(&src, "R"),
        const_value(&src, "KB"),
        const_value(&src, "DV"),
    ) {
        let mut markers = vec![("@R", r), ("@T", kb), ("@C", dv)];
        if let Some(ng) = const_value(&src, "NG") {
            markers.push(("@G", ng));
        }
        let s = const_value(&src, "S").unwrap_or(0);
        src = keep_conditional_lines(&src);
        src = src.replace("@S", &s.to_string());
        src = expand_markers(&src, &markers);
        src = eval_braces(&src);
    }
    src
}

/// A line starting `@if(NAME)` is kept (without the prefix) when the kernel's
/// `const NAME: u32` is above 0, one starting `@if(!NAME)` when it is 0.
///
/// # Panics
/// If NAME is not a constant of the kernel.
fn keep_conditional_lines(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let kept = match line.strip_prefix("@if(") {
            Some(rest) => {
                let end = rest.find(')').expect("`@if(` closes with `)`");
                let (negated, name) = match rest[..end].strip_prefix('!') {
                    Some(n) => (true, n),
                    None => (false, &rest[..end]),
                };
                let on = const_value(src, name)
                    .unwrap_or_else(|| panic!("`@if({name})` names no `const {name}: u32`"))
                    > 0;
                (on != negated).then_some(&rest[end + 1..])
            }
            None => Some(line),
        };
        if let Some(l) = kept {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Replaces each `@{expr}` (integers with `+ - * / %` and parentheses, as left by
/// marker expansion) by its value, so straight-line templates can name the
/// register and lane an element lives in (`kl@{4*@C/@S}`).
fn eval_braces(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(start) = rest.find("@{") {
        out.push_str(&rest[..start]);
        let body = &rest[start + 2..];
        let end = body.find('}').expect("`@{` closes with `}`");
        let value = eval_int(&body[..end])
            .unwrap_or_else(|| panic!("bad template expression `@{{{}}}`", &body[..end]));
        out.push_str(&value.to_string());
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Evaluates an integer expression of `+ - * / %` and parentheses (no unary minus).
fn eval_int(expr: &str) -> Option<i64> {
    fn sum(t: &[u8], i: &mut usize) -> Option<i64> {
        let mut v = product(t, i)?;
        while *i < t.len() && (t[*i] == b'+' || t[*i] == b'-') {
            let op = t[*i];
            *i += 1;
            let r = product(t, i)?;
            v = if op == b'+' { v + r } else { v - r };
        }
        Some(v)
    }
    fn product(t: &[u8], i: &mut usize) -> Option<i64> {
        let mut v = atom(t, i)?;
        while *i < t.len() && matches!(t[*i], b'*' | b'/' | b'%') {
            let op = t[*i];
            *i += 1;
            let r = atom(t, i)?;
            v = match op {
                b'*' => v * r,
                b'/' => v.checked_div(r)?,
                _ => v.checked_rem(r)?,
            };
        }
        Some(v)
    }
    fn atom(t: &[u8], i: &mut usize) -> Option<i64> {
        if *i < t.len() && t[*i] == b'(' {
            *i += 1;
            let v = sum(t, i)?;
            (*i < t.len() && t[*i] == b')').then(|| *i += 1)?;
            return Some(v);
        }
        let start = *i;
        while *i < t.len() && t[*i].is_ascii_digit() {
            *i += 1;
        }
        std::str::from_utf8(&t[start..*i]).ok()?.parse().ok()
    }
    let t: Vec<u8> = expr.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut i = 0;
    let v = sum(&t, &mut i)?;
    (i == t.len()).then_some(v)
}

/// The value of `const NAME: u32 = <n>u;` in `src`, if declared with a literal.
fn const_value(src: &str, name: &str) -> Option<u32> {
    let prefix = format!("const {name}: u32 = ");
    let start = src.find(&prefix)? + prefix.len();
    let end = start + src[start..].find(';')?;
    src[start..end].trim().trim_end_matches('u').parse().ok()
}

fn expand_markers(src: &str, markers: &[(&str, u32)]) -> String {
    let mut out = String::with_capacity(src.len() * 4);
    for line in src.lines() {
        let present: Vec<(&str, u32)> = markers
            .iter()
            .copied()
            .filter(|(m, _)| line.contains(m))
            .collect();
        let mut combos: Vec<String> = vec![line.to_string()];
        for (marker, count) in present {
            combos = combos
                .iter()
                .flat_map(|l| (0..count).map(move |i| l.replace(marker, &i.to_string())))
                .collect();
        }
        for l in combos {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// The complete WGSL of kernel `name`: imports resolved, straight-line template
/// lines expanded with the kernel's default constants (see [`source_with`]).
///
/// # Panics
/// If `name` is not a kernel of this crate or an import is unknown (both are
/// build-time facts checked by the test suite).
pub fn source(name: &str) -> String {
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
    fn template_expressions_evaluate() {
        assert_eq!(eval_int("4*3/8"), Some(1));
        assert_eq!(eval_int("(4*3+3)%8"), Some(7));
        assert_eq!(eval_int("2+3*4-1"), Some(13));
        assert_eq!(eval_int("7/0"), None);
        assert_eq!(eval_int("1+"), None);
        assert_eq!(eval_braces("kl0_@{4*5/8}, @{4*5%8}u"), "kl0_2, 4u");
    }

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
}
