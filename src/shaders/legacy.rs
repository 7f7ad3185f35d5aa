//! The line-repeating template `flash_attention_cpu.wgsl` was written in before
//! `straight_line.rs`, and its expander (`@R`/`@T`/`@C`/`@G` repetition, `@if`,
//! `@S`, `@{expr}`), copied here unchanged to check that the generator emits the
//! same WGSL for every specialization a device can pick.

use super::resolve;
use crate::gpu::{DeviceCaps, Tuning};

/// `shaders/flash_attention_cpu.wgsl` as it was.
const TEMPLATE: &str = include_str!("legacy_template.wgsl");

/// The old `source_with` for `flash_attention_cpu`.
fn old_source_with(consts: &[(&str, u32)]) -> String {
    let name = "flash_attention_cpu";
    let mut src = String::new();
    resolve(TEMPLATE, &mut src, &mut Vec::new());
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

/// `src` without its comment lines (the old expander also repeated comment lines
/// that mention a marker).
fn code_lines(src: &str) -> String {
    src.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn info(device_type: wgpu::DeviceType, backend: wgpu::Backend, subgroup: u32) -> wgpu::AdapterInfo {
    wgpu::AdapterInfo {
        name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
        subgroup_min_size: subgroup,
        subgroup_max_size: subgroup,
        ..wgpu::AdapterInfo::new(device_type, backend)
    }
}

/// The device kinds of `plan/tests.rs`: lavapipe (subgroups of 8), llvmpipe GL
/// (none), a discrete GPU (32) and a browser on SwiftShader (4).
fn kinds() -> Vec<(DeviceCaps, Tuning)> {
    let lavapipe = info(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan, 8);
    let lavapipe_limits = wgpu::Limits {
        max_storage_buffer_binding_size: 128 << 20,
        max_compute_workgroup_storage_size: 32 << 10,
        ..wgpu::Limits::default()
    };
    let gl = info(wgpu::DeviceType::Cpu, wgpu::Backend::Gl, 0);
    let mut gpu = info(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Vulkan, 32);
    gpu.name = "a GPU".into();
    let mut browser = info(wgpu::DeviceType::Cpu, wgpu::Backend::BrowserWebGpu, 4);
    browser.name = "SwiftShader".into();
    let sg = wgpu::Features::SUBGROUP;
    let none = wgpu::Features::empty();
    [
        (&lavapipe, lavapipe_limits, sg),
        (&gl, wgpu::Limits::default(), none),
        (&gpu, wgpu::Limits::default(), sg),
        (&browser, wgpu::Limits::default(), none),
    ]
    .into_iter()
    .map(|(i, limits, f)| (DeviceCaps::new(i, limits, f), Tuning::for_adapter(i)))
    .collect()
}

/// For every device kind, under its own tuning and with subgroups of 4, 8, 16
/// and 32, 16 fused rows, and both: the generator's WGSL is the old expander's,
/// line for line outside comments.
#[test]
fn generator_matches_the_old_template_for_every_specialization() {
    let mut defines: Vec<Vec<(&str, u32)>> = Vec::new();
    let mut specializations = 0;
    for (caps, tuning) in kinds() {
        let mut tunings = vec![tuning];
        for size in [4, 8, 16, 32] {
            let t = tuning.with_subgroup(size).unwrap();
            tunings.extend([t, t.with_fused_rows(16).unwrap()]);
        }
        tunings.push(tuning.with_fused_rows(16).unwrap());
        for t in tunings {
            for s in crate::plan::specializations(&caps, t) {
                if s.kernel.name == "flash_attention_cpu" {
                    specializations += 1;
                    if !defines.contains(&s.defines) {
                        defines.push(s.defines);
                    }
                }
            }
        }
    }
    // Whole-row and subgroup loads, per-key and vec4 mask reads, 16 rows.
    let has = |n: &str, f: &dyn Fn(u32) -> bool| {
        defines
            .iter()
            .any(|d| d.iter().any(|&(m, v)| m == n && f(v)))
    };
    assert!(has("S", &|v| v == 4) && has("S", &|v| v == 32) && !has("S", &|v| v == 0));
    assert!(has("B4", &|v| v == 1) && has("B4", &|v| v == 0) && has("R", &|v| v == 16));
    assert!(defines.iter().any(|d| !d.iter().any(|&(m, _)| m == "S")));
    defines.push(Vec::new()); // the defaults of `source("flash_attention_cpu")`
    let mut lines = 0;
    for d in &defines {
        let old = code_lines(&old_source_with(d));
        lines += old.lines().count();
        let new = code_lines(&super::source_with("flash_attention_cpu", d));
        if old != new {
            let line = old
                .lines()
                .zip(new.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(old.lines().count().min(new.lines().count()));
            panic!(
                "{d:?}: first difference at code line {line}:\nold: {:?}\nnew: {:?}",
                old.lines().nth(line),
                new.lines().nth(line)
            );
        }
    }
    eprintln!(
        "flash_attention_cpu: {specializations} specializations (device kind × tuning × \
         overrides), {} distinct sources compared, {lines} code lines",
        defines.len()
    );
}
