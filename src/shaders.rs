//! WGSL sources, embedded at compile time, with a tiny `#import` step.
//!
//! A line `#import shared/NAME` is replaced by `shaders/shared/NAME.wgsl` (once per
//! module). Everything else is plain WGSL, specialized with `override` constants.

/// Every kernel's WGSL, by kernel name.
pub const KERNELS: &[(&str, &str)] = &[
    ("scores", include_str!("../shaders/scores.wgsl")),
    ("softmax", include_str!("../shaders/softmax.wgsl")),
    ("weighted_sum", include_str!("../shaders/weighted_sum.wgsl")),
    ("posenc", include_str!("../shaders/posenc.wgsl")),
    ("matmul", include_str!("../shaders/matmul.wgsl")),
    ("rope", include_str!("../shaders/rope.wgsl")),
    (
        "flash_attention",
        include_str!("../shaders/flash_attention.wgsl"),
    ),
    ("decode", include_str!("../shaders/decode.wgsl")),
    (
        "flash_attention_cpu",
        include_str!("../shaders/flash_attention_cpu.wgsl"),
    ),
    (
        "flash_attention_tiled",
        include_str!("../shaders/flash_attention_tiled.wgsl"),
    ),
];

const SHARED: &[(&str, &str)] = &[
    ("grid", include_str!("../shaders/shared/grid.wgsl")),
    ("tile_mm", include_str!("../shaders/shared/tile_mm.wgsl")),
    ("mask", include_str!("../shaders/shared/mask.wgsl")),
    ("trig", include_str!("../shaders/shared/trig.wgsl")),
    (
        "flash_common",
        include_str!("../shaders/shared/flash_common.wgsl"),
    ),
];

/// [`source`] with module constants replaced: each `const NAME: u32 = …;` line
/// whose NAME is in `consts` gets the given value. Only for what `override` cannot
/// express (sizes of function-scope arrays, straight-line code); everything else
/// is an `override`.
///
/// Straight-line code: in a kernel that declares `const R`, `const KB` and
/// `const DV`, every line that contains `@R`, `@T` or `@C` is repeated for each
/// value of those markers (0..R, 0..KB, 0..DV, nested in that order, with the
/// values the constants hold after substitution) with the marker replaced by the
/// number. So the result is always plain WGSL.
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
        src = expand_markers(&src, [("@R", r), ("@T", kb), ("@C", dv)]);
    }
    src
}

/// The value of `const NAME: u32 = <n>u;` in `src`, if declared with a literal.
fn const_value(src: &str, name: &str) -> Option<u32> {
    let prefix = format!("const {name}: u32 = ");
    let start = src.find(&prefix)? + prefix.len();
    let end = start + src[start..].find(';')?;
    src[start..end].trim().trim_end_matches('u').parse().ok()
}

fn expand_markers(src: &str, markers: [(&str, u32); 3]) -> String {
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
