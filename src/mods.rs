//! Programmable attention: a user's WGSL `score_mod` and `mask_mod` (as in
//! PyTorch's FlexAttention), spliced into the fused, decode and unfused kernels,
//! each with a CPU twin (a Rust closure) so [`crate::verify`] checks the GPU
//! against the f64 reference with the same mod, plus block-sparse skipping from
//! a block mask the GPU classifies once per problem size.
//!
//! ```text
//! fn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> f32   // the score after scaling
//! fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool               // true = attend
//! ```
//!
//! `b` is the batch, `h` the query head, `q` the 0-based query index of the
//! call and `kv` the 0-based key position (in a [`crate::KvCache`], the
//! position in the whole sequence). Where a mod runs in the order of
//! [`crate::transform::ScoreTransform`]: `scale·q·k → softcap → + additive
//! mask − ALiBi → score_mod → excluded by the rules, the bool mask, mask_mod,
//! or a score at or below −1e30`. A key an additive mask already excludes is
//! not passed to `score_mod`; `score_mod` excludes a key by returning −1e30 or
//! less; results above 1e38 are clamped there. WGSL may assume that inf and
//! NaN never occur, so a mod must not return them (the kernels exclude a NaN
//! where the driver keeps it, as the CPU twin does). The
//! kernels may call a mod for indices past the problem (a block's tail), whose
//! result they discard.
//!
//! Named buffers ([`ModData`]: `f32`, `i32` or `u32` arrays) are visible to
//! both mods as functions `NAME(i: u32) -> T` (an index past the end reads the
//! last element) and constants `NAME_LEN: u32`. Helper functions a mod's file
//! declares must not clash with the kernels' names: prefix them (e.g. `my_`).
//!
//! ```
//! use wgpu_attention::mods::{MaskMod, ModData, Mods};
//! // Causal attention within documents: `doc(i)` is the document of position i.
//! let docs: Vec<u32> = (0..64).map(|i| i / 16).collect();
//! let cpu_docs = docs.clone();
//! let mods = Mods::builder()
//!     .mask_mod(MaskMod::new(
//!         "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool { return doc(q) == doc(kv) && kv <= q; }",
//!         move |i| cpu_docs[i.q] == cpu_docs[i.kv] && i.kv <= i.q,
//!     ))
//!     .buffer("doc", ModData::U32(docs))
//!     .build()
//!     .unwrap();
//! assert!(mods.has_mask_mod() && !mods.has_score_mod());
//! // A mod that does not type-check is refused with the file and line.
//! let bad = Mods::builder()
//!     .mask_mod(MaskMod::gpu_only("fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {\n  return q + 1u;\n}").origin("doc.wgsl"))
//!     .build();
//! assert!(bad.unwrap_err().to_string().contains("doc.wgsl:2"));
//! ```

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};

/// Buffers of at most this many elements are compiled into the kernels as
/// constant tables (per-head parameters, small bias tables); larger ones are
/// read from the mods binding.
pub const SMALL_BUFFER: usize = 64;

/// Query rows per block of the block mask.
pub const BLOCK_Q: usize = 64;
/// Keys per block of the block mask.
pub const BLOCK_K: usize = 64;

/// A block of the block mask that `mask_mod` excludes entirely: skipped.
pub const BLOCK_EMPTY: u32 = 0;
/// A block where `mask_mod` is true and false: evaluated per key.
pub const BLOCK_PARTIAL: u32 = 1;
/// A block `mask_mod` includes entirely: attended without evaluating it.
pub const BLOCK_FULL: u32 = 2;

/// The indices a mod sees (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModIndex {
    /// Batch.
    pub b: usize,
    /// Query head.
    pub h: usize,
    /// Query index in the call.
    pub q: usize,
    /// Key position.
    pub kv: usize,
}

type ScoreFn = dyn Fn(f64, ModIndex) -> f64 + Send + Sync;
type MaskFn = dyn Fn(ModIndex) -> bool + Send + Sync;

/// A user `score_mod`: its WGSL and optional CPU twin.
#[derive(Clone)]
pub struct ScoreMod {
    wgsl: String,
    origin: String,
    cpu: Option<Arc<ScoreFn>>,
}

/// A user `mask_mod`: its WGSL and optional CPU twin.
#[derive(Clone)]
pub struct MaskMod {
    wgsl: String,
    origin: String,
    cpu: Option<Arc<MaskFn>>,
}

impl ScoreMod {
    /// `wgsl` declaring `fn score_mod(score: f32, b: u32, h: u32, q: u32, kv:
    /// u32) -> f32`, and `cpu`, the same function in f64 for the reference.
    pub fn new(
        wgsl: impl Into<String>,
        cpu: impl Fn(f64, ModIndex) -> f64 + Send + Sync + 'static,
    ) -> Self {
        ScoreMod {
            wgsl: wgsl.into(),
            origin: "score_mod".into(),
            cpu: Some(Arc::new(cpu)),
        }
    }

    /// A mod with no CPU twin (read from a file by the command line): runs on
    /// the GPU; the reference refuses it.
    pub fn gpu_only(wgsl: impl Into<String>) -> Self {
        ScoreMod {
            wgsl: wgsl.into(),
            origin: "score_mod".into(),
            cpu: None,
        }
    }

    /// The name errors give the source (a file name).
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }
}

impl MaskMod {
    /// `wgsl` declaring `fn mask_mod(b: u32, h: u32, q: u32, kv: u32) ->
    /// bool` (true = attend), and `cpu`, the same predicate for the reference.
    pub fn new(
        wgsl: impl Into<String>,
        cpu: impl Fn(ModIndex) -> bool + Send + Sync + 'static,
    ) -> Self {
        MaskMod {
            wgsl: wgsl.into(),
            origin: "mask_mod".into(),
            cpu: Some(Arc::new(cpu)),
        }
    }

    /// A mod with no CPU twin (see [`ScoreMod::gpu_only`]).
    pub fn gpu_only(wgsl: impl Into<String>) -> Self {
        MaskMod {
            wgsl: wgsl.into(),
            origin: "mask_mod".into(),
            cpu: None,
        }
    }

    /// The name errors give the source (a file name).
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }
}

/// The elements of a named buffer the mods read.
#[derive(Clone, Debug, PartialEq)]
pub enum ModData {
    /// `NAME(i) -> f32`.
    F32(Vec<f32>),
    /// `NAME(i) -> i32`.
    I32(Vec<i32>),
    /// `NAME(i) -> u32`.
    U32(Vec<u32>),
}

impl ModData {
    fn len(&self) -> usize {
        match self {
            ModData::F32(v) => v.len(),
            ModData::I32(v) => v.len(),
            ModData::U32(v) => v.len(),
        }
    }

    fn wgsl_type(&self) -> &'static str {
        match self {
            ModData::F32(_) => "f32",
            ModData::I32(_) => "i32",
            ModData::U32(_) => "u32",
        }
    }

    fn words(&self) -> Vec<u32> {
        match self {
            ModData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
            ModData::I32(v) => v.iter().map(|&x| x as u32).collect(),
            ModData::U32(v) => v.clone(),
        }
    }
}

/// Collects the mods and buffers of a [`Mods`].
#[derive(Default)]
pub struct ModsBuilder {
    score: Option<ScoreMod>,
    mask: Option<MaskMod>,
    buffers: Vec<(String, ModData)>,
    blocks: Option<bool>,
}

impl ModsBuilder {
    /// With a score modification.
    pub fn score_mod(mut self, m: ScoreMod) -> Self {
        self.score = Some(m);
        self
    }

    /// With a mask predicate.
    pub fn mask_mod(mut self, m: MaskMod) -> Self {
        self.mask = Some(m);
        self
    }

    /// With a named read-only buffer both mods may read as `NAME(i)`.
    pub fn buffer(mut self, name: impl Into<String>, data: ModData) -> Self {
        self.buffers.push((name.into(), data));
        self
    }

    /// Whether the fused kernels skip the key blocks `mask_mod` excludes
    /// (classified on the GPU once per problem size; on by default with a
    /// `mask_mod`).
    pub fn block_mask(mut self, on: bool) -> Self {
        self.blocks = Some(on);
        self
    }

    /// Checks names, parses and type-checks each mod with naga (errors name
    /// the mod's file and line), and checks that it fits the kernels.
    pub fn build(self) -> Result<Mods> {
        if self.score.is_none() && self.mask.is_none() {
            return Err(Error::InvalidMod(
                "no score_mod or mask_mod given: add one, or pass no mods".into(),
            ));
        }
        let mut seen = Vec::<&str>::new();
        let mut data = Vec::new();
        let mut accessors = String::new();
        for (name, d) in &self.buffers {
            check_name(name)?;
            if seen.contains(&name.as_str()) {
                return Err(Error::InvalidMod(format!(
                    "buffer `{name}` is given twice: give each name once"
                )));
            }
            seen.push(name);
            if let ModData::F32(v) = d {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::InvalidMod(format!(
                        "buffer `{name}` holds {} at index {i}: WGSL has no inf or NaN, use finite values",
                        v[i]
                    )));
                }
            }
            if d.len() == 0 {
                return Err(Error::InvalidMod(format!(
                    "buffer `{name}` is empty: give it at least one element"
                )));
            }
            let n = d.len();
            let ty = d.wgsl_type();
            if n <= SMALL_BUFFER {
                // Compiled into the kernel: a constant table the driver can
                // keep out of the key loop (a storage load there is a gather
                // per key on CPU drivers).
                let elems: Vec<String> = match d {
                    ModData::F32(v) => v.iter().map(|x| format!("{x:?}f")).collect(),
                    ModData::I32(v) => v
                        .iter()
                        .map(|&x| match x {
                            i32::MIN => "(-2147483647i - 1i)".to_string(),
                            x => format!("{x}i"),
                        })
                        .collect(),
                    ModData::U32(v) => v.iter().map(|x| format!("{x}u")).collect(),
                };
                accessors.push_str(&format!(
                    "const {name}_LEN: u32 = {n}u;\nconst {name}_TABLE = array<{ty}, {n}>({});\nfn {name}(i: u32) -> {ty} {{ return {name}_TABLE[min(i, {}u)]; }}\n",
                    elems.join(", "),
                    n - 1
                ));
            } else {
                // Read from the mods binding, where only these buffers' words go.
                let read = format!("mods[{}u + min(i, {}u)]", data.len(), n - 1);
                let body = if ty == "u32" {
                    read
                } else {
                    format!("bitcast<{ty}>({read})")
                };
                accessors.push_str(&format!(
                    "const {name}_LEN: u32 = {n}u;\nfn {name}(i: u32) -> {ty} {{ return {body}; }}\n"
                ));
                data.extend(d.words());
            }
        }
        if data.len() > (u32::MAX / 8) as usize {
            return Err(Error::InvalidMod(
                "mod buffers hold more than 2^29 elements: use smaller tables".into(),
            ));
        }
        let score_sig = Signature {
            name: "score_mod",
            args: &["f32", "u32", "u32", "u32", "u32"],
            ret: "f32",
        };
        let mask_sig = Signature {
            name: "mask_mod",
            args: &["u32", "u32", "u32", "u32"],
            ret: "bool",
        };
        if let Some(m) = &self.score {
            check_source(&m.wgsl, &m.origin, &accessors, &score_sig, "mask_mod")?;
        }
        if let Some(m) = &self.mask {
            check_source(&m.wgsl, &m.origin, &accessors, &mask_sig, "score_mod")?;
        }
        let mut text = String::from(
            "// Programmable attention (src/mods.rs): the caller's buffers and mods.\n",
        );
        text.push_str(&format!("const MOD_CLASSES: u32 = {}u;\n", data.len()));
        text.push_str(&accessors);
        for (m, o) in [
            (self.score.as_ref().map(|m| &m.wgsl), "score_mod"),
            (self.mask.as_ref().map(|m| &m.wgsl), "mask_mod"),
        ] {
            if let Some(src) = m {
                text.push_str(&format!("// {o}\n{}\n", strip_enables(src)));
            }
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        let blocks = self.mask.is_some() && self.blocks.unwrap_or(true);
        let wgsl = ModWgsl {
            text: Arc::from(text),
            hash: h.finish(),
            score: self.score.is_some(),
            mask: self.mask.is_some(),
            blocks,
        };
        // The mods inside the kernels: a clash with a kernel's names shows here.
        let kernels: &[&str] = if blocks {
            &["flash_attention", "scores", "block_mask"]
        } else {
            &["flash_attention", "scores"]
        };
        for &kernel in kernels {
            let spec = crate::shaders::Specialization::new(kernel_spec(kernel))
                .mods(Some(Arc::new(wgsl.clone())));
            check_kernel(&spec.source(), kernel)?;
        }
        Ok(Mods {
            shared: Arc::new(Shared {
                score: self.score,
                mask: self.mask,
                wgsl: Arc::new(wgsl),
                data: if data.is_empty() { vec![0] } else { data },
                gpu: Mutex::new(Vec::new()),
            }),
        })
    }
}

fn kernel_spec(name: &str) -> &'static crate::shaders::KernelSpec {
    match name {
        "flash_attention" => &crate::kernels::flash_attention::SPEC,
        "scores" => &crate::kernels::scores::SPEC,
        _ => &crate::kernels::block_mask::SPEC,
    }
}

/// The WGSL a [`crate::shaders::Specialization`] splices in: the buffers'
/// accessors and the mods, with what they switch on.
#[derive(Clone, Debug)]
pub struct ModWgsl {
    /// Accessors, `MOD_CLASSES` (where the block classes start in the mods
    /// binding) and the mods' sources.
    pub text: Arc<str>,
    /// Hash of `text` (the pipeline cache's key).
    pub hash: u64,
    /// A `score_mod` is given.
    pub score: bool,
    /// A `mask_mod` is given.
    pub mask: bool,
    /// The fused kernels skip blocks by the block mask.
    pub blocks: bool,
}

impl PartialEq for ModWgsl {
    fn eq(&self, o: &Self) -> bool {
        (self.hash, self.score, self.mask, self.blocks) == (o.hash, o.score, o.mask, o.blocks)
            && self.text == o.text
    }
}

impl ModWgsl {
    /// The conditional-line switches of the kernels' mod code.
    pub(crate) fn flags(&self) -> [(&'static str, u32); 3] {
        [
            ("SCORE_MOD", self.score as u32),
            ("MASK_MOD", self.mask as u32),
            ("MOD_BLOCKS", self.blocks as u32),
        ]
    }
}

struct Signature {
    name: &'static str,
    args: &'static [&'static str],
    ret: &'static str,
}

impl Signature {
    fn text(&self) -> String {
        let names: &[&str] = if self.args.len() == 5 {
            &["score", "b", "h", "q", "kv"]
        } else {
            &["b", "h", "q", "kv"]
        };
        let args: Vec<String> = names
            .iter()
            .zip(self.args)
            .map(|(n, t)| format!("{n}: {t}"))
            .collect();
        format!("fn {}({}) -> {}", self.name, args.join(", "), self.ret)
    }
}

/// Names the kernels reserve (their bindings, parameters and entry point).
const RESERVED: &[&str] = &[
    "mods",
    "p",
    "main",
    "score_mod",
    "mask_mod",
    "q",
    "k",
    "v",
    "o",
    "s",
    "lse",
    "slopes",
    "key_lengths",
    "mask4",
    "mask_words",
    "x",
    "out",
];

fn check_name(name: &str) -> Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__");
    if !ok {
        return Err(Error::InvalidMod(format!(
            "buffer name `{name}` is not a WGSL identifier: use letters, digits and `_`, starting with a letter"
        )));
    }
    if RESERVED.contains(&name)
        || ["flash_", "mask_", "mod_", "MOD_"]
            .iter()
            .any(|p| name.starts_with(p))
    {
        return Err(Error::InvalidMod(format!(
            "buffer name `{name}` clashes with the kernels' names (reserved: {RESERVED:?} and the prefixes flash_, mask_, mod_): choose another"
        )));
    }
    Ok(())
}

/// `enable` directives must come first in a module: a mod's are dropped (the
/// kernels enable what they use; f16 in a mod needs a kernel that enables it).
fn strip_enables(src: &str) -> String {
    src.lines()
        .map(|l| {
            if l.trim_start().starts_with("enable ") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn type_name(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    match &module.types[ty].inner {
        naga::TypeInner::Scalar(s) => match (s.kind, s.width) {
            (naga::ScalarKind::Float, 4) => "f32".into(),
            (naga::ScalarKind::Float, 2) => "f16".into(),
            (naga::ScalarKind::Uint, 4) => "u32".into(),
            (naga::ScalarKind::Sint, 4) => "i32".into(),
            (naga::ScalarKind::Bool, _) => "bool".into(),
            _ => format!("{s:?}"),
        },
        other => format!("{other:?}"),
    }
}

/// Parses and validates `src` alone with the buffers' accessors after it (so
/// naga's line numbers are the file's), then checks its signature.
fn check_source(
    src: &str,
    origin: &str,
    accessors: &str,
    sig: &Signature,
    other: &str,
) -> Result<()> {
    let probe =
        format!("{src}\n@group(0) @binding(0) var<storage, read> mods: array<u32>;\n{accessors}");
    let module = naga::front::wgsl::parse_str(&probe).map_err(|e| {
        Error::InvalidMod(located(
            origin,
            e.location(&probe),
            e.message(),
            &e.emit_to_string_with_path(&probe, origin),
        ))
    })?;
    let f = module
        .functions
        .iter()
        .find(|(_, f)| f.name.as_deref() == Some(sig.name))
        .map(|(_, f)| f);
    let Some(f) = f else {
        return Err(Error::InvalidMod(format!(
            "{origin}: declares no `{}`: the kernels call `{}`",
            sig.name,
            sig.text()
        )));
    };
    let args: Vec<String> = f
        .arguments
        .iter()
        .map(|a| type_name(&module, a.ty))
        .collect();
    let ret = f.result.as_ref().map(|r| type_name(&module, r.ty));
    if args != sig.args || ret.as_deref() != Some(sig.ret) {
        return Err(Error::InvalidMod(format!(
            "{origin}: `{}` has arguments ({}) -> {}: the kernels call `{}`",
            sig.name,
            args.join(", "),
            ret.unwrap_or_else(|| "nothing".into()),
            sig.text()
        )));
    }
    if module
        .functions
        .iter()
        .any(|(_, f)| f.name.as_deref() == Some(other))
    {
        return Err(Error::InvalidMod(format!(
            "{origin}: declares `{other}` too: give each mod in its own source"
        )));
    }
    if !module.entry_points.is_empty() {
        return Err(Error::InvalidMod(format!(
            "{origin}: declares an entry point: a mod is plain functions"
        )));
    }
    if module
        .global_variables
        .iter()
        .any(|(_, g)| g.binding.is_some() && g.name.as_deref() != Some("mods"))
    {
        return Err(Error::InvalidMod(format!(
            "{origin}: declares a binding: give buffers by name (ModsBuilder::buffer, --mod-buffer NAME=FILE)"
        )));
    }
    let mut v = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    );
    v.validate(&module).map_err(|e| {
        // The innermost span is the offending expression; the message is the
        // whole chain of causes ("Function 'mask_mod' is invalid: ...").
        let at = e
            .spans()
            .filter(|(s, _)| s.is_defined())
            .min_by_key(|(s, _)| s.to_range().map_or(usize::MAX, |r| r.len()))
            .map(|(s, _)| s.location(&probe));
        let mut message = e.as_inner().to_string();
        let mut cause = std::error::Error::source(e.as_inner());
        while let Some(c) = cause {
            message.push_str(&format!(": {c}"));
            cause = c.source();
        }
        Error::InvalidMod(located(
            origin,
            at,
            &message,
            &e.emit_to_string_with_path(&probe, origin),
        ))
    })?;
    Ok(())
}

fn located(origin: &str, at: Option<naga::SourceLocation>, message: &str, full: &str) -> String {
    match at {
        Some(l) => format!(
            "{origin}:{}:{}: {message}\n{full}",
            l.line_number, l.line_position
        ),
        None => format!("{origin}: {message}\n{full}"),
    }
}

/// Validates a whole kernel with the mods spliced in.
fn check_kernel(src: &str, kernel: &str) -> Result<()> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| {
        Error::InvalidMod(format!(
            "the mods do not fit kernel {kernel} (a helper's name may clash with the kernel's: prefix it): {}",
            e.message()
        ))
    })?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| {
        Error::InvalidMod(format!(
            "the mods do not fit kernel {kernel}: {}",
            e.as_inner()
        ))
    })?;
    Ok(())
}

struct GpuData {
    gpu: Weak<crate::gpu::GpuInner>,
    /// The buffers' words alone (no block mask).
    plain: Option<Arc<wgpu::Buffer>>,
    /// The buffers' words followed by the block classes, per `[B, Hq, Nq, Nk]`.
    blocks: HashMap<[usize; 4], Arc<wgpu::Buffer>>,
}

struct Shared {
    score: Option<ScoreMod>,
    mask: Option<MaskMod>,
    wgsl: Arc<ModWgsl>,
    data: Vec<u32>,
    gpu: Mutex<Vec<GpuData>>,
}

/// A `score_mod` and/or `mask_mod` with their buffers, checked
/// ([`ModsBuilder::build`]); cheap to clone. Give it to
/// [`crate::AttentionOptions::mods`].
#[derive(Clone)]
pub struct Mods {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Mods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Mods(score_mod: {}, mask_mod: {}, block mask: {}, {:016x})",
            self.has_score_mod(),
            self.has_mask_mod(),
            self.shared.wgsl.blocks,
            self.shared.wgsl.hash
        )
    }
}

impl PartialEq for Mods {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &o.shared)
    }
}

impl Mods {
    /// Starts collecting mods and buffers.
    pub fn builder() -> ModsBuilder {
        ModsBuilder::default()
    }

    /// Whether a `score_mod` is given.
    pub fn has_score_mod(&self) -> bool {
        self.shared.score.is_some()
    }

    /// Whether a `mask_mod` is given.
    pub fn has_mask_mod(&self) -> bool {
        self.shared.mask.is_some()
    }

    /// Whether the fused kernels skip blocks by the block mask.
    pub fn block_skipping(&self) -> bool {
        self.shared.wgsl.blocks
    }

    /// Whether every mod has a CPU twin (the reference can run it).
    pub fn has_cpu_twins(&self) -> bool {
        self.shared.score.as_ref().is_none_or(|m| m.cpu.is_some())
            && self.shared.mask.as_ref().is_none_or(|m| m.cpu.is_some())
    }

    /// The WGSL the kernels splice in.
    pub fn wgsl(&self) -> &Arc<ModWgsl> {
        &self.shared.wgsl
    }

    /// The CPU twins applied to scores `s` `[B, Hq, Nq, Nk]` (after softcap,
    /// additive mask and ALiBi), in the kernels' order: `score_mod` on each
    /// entry not already excluded (clamped to 1e38), then `mask_mod` excluding
    /// (`-inf`). `kv0` is the position of key 0.
    ///
    /// # Panics
    /// If a mod has no CPU twin ([`Mods::has_cpu_twins`]).
    pub fn apply_reference(&self, s: &mut [f64], [b, h, nq, nk]: [usize; 4], kv0: usize) {
        let masked = crate::mask::ADDITIVE_MASKED as f64;
        let score = self.shared.score.as_ref().map(|m| {
            m.cpu
                .as_ref()
                .expect("this score_mod has no CPU twin (ScoreMod::gpu_only)")
        });
        let mask = self.shared.mask.as_ref().map(|m| {
            m.cpu
                .as_ref()
                .expect("this mask_mod has no CPU twin (MaskMod::gpu_only)")
        });
        for bi in 0..b {
            for hi in 0..h {
                for q in 0..nq {
                    for j in 0..nk {
                        let e = &mut s[((bi * h + hi) * nq + q) * nk + j];
                        let at = ModIndex {
                            b: bi,
                            h: hi,
                            q,
                            kv: kv0 + j,
                        };
                        if let Some(f) = score {
                            if *e > masked {
                                let x = f(*e, at);
                                *e = if x.is_nan() {
                                    f64::NEG_INFINITY
                                } else {
                                    x.min(1e38)
                                };
                            }
                        }
                        if let Some(f) = mask {
                            if !f(at) {
                                *e = f64::NEG_INFINITY;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The CPU twin of the block classification: [`BLOCK_EMPTY`],
    /// [`BLOCK_PARTIAL`] or [`BLOCK_FULL`] per `[B, Hq, ⌈Nq/BLOCK_Q⌉,
    /// ⌈Nk/BLOCK_K⌉]` block, from `mask_mod` over the block's indices within
    /// the problem (all full without a `mask_mod`).
    ///
    /// # Panics
    /// If the `mask_mod` has no CPU twin.
    pub fn block_mask_reference(&self, [b, h, nq, nk]: [usize; 4]) -> Vec<u32> {
        let (nqb, nkb) = (nq.div_ceil(BLOCK_Q), nk.div_ceil(BLOCK_K));
        let mask = self.shared.mask.as_ref().map(|m| {
            m.cpu
                .as_ref()
                .expect("this mask_mod has no CPU twin (MaskMod::gpu_only)")
        });
        let mut out = Vec::with_capacity(b * h * nqb * nkb);
        for bi in 0..b {
            for hi in 0..h {
                for qb in 0..nqb {
                    for kb in 0..nkb {
                        let (mut any, mut all) = (false, true);
                        for q in qb * BLOCK_Q..((qb + 1) * BLOCK_Q).min(nq) {
                            for kv in kb * BLOCK_K..((kb + 1) * BLOCK_K).min(nk) {
                                let v = mask.is_none_or(|f| {
                                    f(ModIndex {
                                        b: bi,
                                        h: hi,
                                        q,
                                        kv,
                                    })
                                });
                                any |= v;
                                all &= v;
                            }
                        }
                        out.push(match (any, all) {
                            (_, true) => BLOCK_FULL,
                            (false, _) => BLOCK_EMPTY,
                            _ => BLOCK_PARTIAL,
                        });
                    }
                }
            }
        }
        out
    }

    /// The GPU's block classification for `dims` (computed and cached as the
    /// kernels use it), read back.
    pub async fn block_mask(&self, gpu: &crate::Gpu, dims: [usize; 4]) -> Result<Vec<u32>> {
        if !self.shared.wgsl.blocks {
            return Err(Error::InvalidMod(
                "these mods have no block mask (no mask_mod, or block_mask(false))".into(),
            ));
        }
        let buf = self.binding(gpu, Some(dims))?;
        let off = self.shared.data.len() as u64 * 4;
        let n = block_count(dims) as u64;
        let raw = gpu.read_buffer(&buf, off, n * 4).await?;
        Ok(bytemuck::cast_slice::<u8, u32>(&raw)[..n as usize].to_vec())
    }

    /// [`Mods::block_mask`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn block_mask_blocking(&self, gpu: &crate::Gpu, dims: [usize; 4]) -> Result<Vec<u32>> {
        pollster::block_on(self.block_mask(gpu, dims))
    }

    /// The mods binding on `gpu`: the buffers' words, followed by the block
    /// classes of `dims` when given (classified on first use with their own
    /// submission, so every later submission sees them).
    pub(crate) fn binding(
        &self,
        gpu: &crate::Gpu,
        dims: Option<[usize; 4]>,
    ) -> Result<Arc<wgpu::Buffer>> {
        let mut all = self.shared.gpu.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|g| g.gpu.strong_count() > 0);
        let pos = match all
            .iter()
            .position(|g| g.gpu.upgrade().is_some_and(|i| Arc::ptr_eq(&i, &gpu.inner)))
        {
            Some(i) => i,
            None => {
                all.push(GpuData {
                    gpu: Arc::downgrade(&gpu.inner),
                    plain: None,
                    blocks: HashMap::new(),
                });
                all.len() - 1
            }
        };
        let slot = &mut all[pos];
        let Some(dims) = dims.filter(|_| self.shared.wgsl.blocks) else {
            if let Some(b) = &slot.plain {
                return Ok(b.clone());
            }
            let b = Arc::new(gpu.upload(
                "mod buffers",
                bytemuck::cast_slice(&self.shared.data),
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            )?);
            slot.plain = Some(b.clone());
            return Ok(b);
        };
        if let Some(b) = slot.blocks.get(&dims) {
            return Ok(b.clone());
        }
        // A KV cache growing by a token per step asks for a new size each step:
        // keep the cache bounded (a dropped size is classified again if asked).
        if slot.blocks.len() >= MAX_CACHED_SIZES {
            slot.blocks.clear();
        }
        let mut words = self.shared.data.clone();
        words.resize(words.len() + block_count(dims), BLOCK_PARTIAL);
        let buf = gpu.upload(
            "mod buffers and block mask",
            bytemuck::cast_slice(&words),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        )?;
        let mut rec = gpu.recorder();
        crate::kernels::block_mask::record(&mut rec, self, &buf, dims)?;
        rec.submit()?;
        let buf = Arc::new(buf);
        slot.blocks.insert(dims, buf.clone());
        Ok(buf)
    }
}

/// Example mods: causal attention within documents (a `u32` buffer `doc` of
/// 64 positions in documents of 16) and a `score_mod` scaling each of 16 heads
/// by an `f32` table `head_scale`, with their CPU twins. What the shader checks
/// (`tests/shaders.rs`, the browser's) compile the kernels' mod code with, and
/// the block-mask kernel's [`crate::shaders::source`].
pub fn example() -> Mods {
    let doc: Vec<u32> = (0..64).map(|i| i / 16).collect();
    let scale: Vec<f32> = (0..16).map(|h| 1.0 - h as f32 / 32.0).collect();
    let (d, s) = (doc.clone(), scale.clone());
    Mods::builder()
        .mask_mod(MaskMod::new(
            "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {\n    return kv <= q && doc(q) == doc(kv);\n}",
            move |i| i.kv <= i.q && d[i.q.min(63)] == d[i.kv.min(63)],
        ))
        .score_mod(ScoreMod::new(
            "fn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> f32 {\n    return score * head_scale(h);\n}",
            move |x, i| x * s[i.h.min(15)] as f64,
        ))
        .buffer("doc", ModData::U32(doc))
        .buffer("head_scale", ModData::F32(scale))
        .build()
        .expect("the example mods build")
}

/// Problem sizes whose block mask a device keeps per [`Mods`].
const MAX_CACHED_SIZES: usize = 16;

/// Blocks of the block mask for `[B, Hq, Nq, Nk]`.
pub(crate) fn block_count([b, h, nq, nk]: [usize; 4]) -> usize {
    b * h * nq.div_ceil(BLOCK_Q) * nk.div_ceil(BLOCK_K)
}

/// The mods of one call as the kernels see them: the mods, and where the
/// call's batch, head and key 0 sit in the problem's indices (a chunk of the
/// unfused path, a page of a KV cache).
#[derive(Clone, Debug, PartialEq)]
pub struct ModRef {
    /// The mods.
    pub mods: Mods,
    /// Batch index of the call's batch 0.
    pub b0: u32,
    /// Query head of the call's head 0.
    pub h0: u32,
    /// Position of the call's key 0.
    pub kv0: u32,
    /// The problem's `[B, Hq, Nq, Nk]` (the block mask's dims).
    pub dims: [usize; 4],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(b: ModsBuilder) -> String {
        match b.build() {
            Err(Error::InvalidMod(m)) => m,
            other => panic!("expected InvalidMod, got {other:?}"),
        }
    }

    #[test]
    fn type_errors_point_at_the_expression() {
        let e = err(Mods::builder().mask_mod(
            MaskMod::gpu_only(
                "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {\n    return q + 1u;\n}",
            )
            .origin("m.wgsl"),
        ));
        assert!(e.starts_with("m.wgsl:2:"), "{e}");
    }

    #[test]
    fn a_returned_index_of_the_wrong_type_points_at_its_line() {
        let e = err(Mods::builder().mask_mod(
            MaskMod::gpu_only(
                "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {\n  return q;\n}",
            )
            .origin("doc.wgsl"),
        ));
        // naga locates it at the returned expression's origin (argument q, line 1).
        assert!(
            e.starts_with("doc.wgsl:1:") && e.contains("does not match the declared return type"),
            "{e}"
        );
    }

    #[test]
    fn a_score_mod_alone_builds() {
        let m = Mods::builder()
            .score_mod(ScoreMod::new(
                "fn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> f32 { return score; }",
                |s, _| s,
            ))
            .build()
            .unwrap();
        assert!(m.has_score_mod() && !m.block_skipping());
    }
}
