//! `--score-mod`, `--mask-mod`, `--mod-buffer` and `--no-block-mask`:
//! programmable attention (the library's `mods`) from WGSL and `.npy` files.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{ArgGroup, Args};
use wgpu_attention::mods::{MaskMod, ModData, Mods, ScoreMod};

use crate::error::bad_input;
use crate::io;

/// A user `score_mod` / `mask_mod` in WGSL files, with the buffers they read.
#[derive(Args, Clone, Debug, Default)]
#[command(group(
    ArgGroup::new("mod_source")
        .args(["score_mod", "mask_mod"])
        .multiple(true)
))]
pub struct ModArgs {
    /// WGSL file declaring `fn score_mod(score: f32, b: u32, h: u32, q: u32,
    /// kv: u32) -> f32`: the score of query q and key kv of batch b, query
    /// head h, after scaling, --softcap, a float --mask and ALiBi; returning
    /// -1e30 or less excludes the key (WGSL has no inf or NaN: do not return
    /// them). Mods from files have no
    /// CPU twin: --check then compares two GPU paths (see below).
    #[arg(long, value_name = "FILE.wgsl")]
    pub score_mod: Option<PathBuf>,
    /// WGSL file declaring `fn mask_mod(b: u32, h: u32, q: u32, kv: u32) ->
    /// bool` (true = attend), combined with the other masks; key blocks of
    /// 64×64 it excludes entirely are skipped (see --no-block-mask).
    #[arg(long, value_name = "FILE.wgsl")]
    pub mask_mod: Option<PathBuf>,
    /// A buffer the mods read as `NAME(i: u32) -> T` (an index past the end
    /// reads the last element) and `NAME_LEN: u32`, from a 1-D .npy of
    /// float32, int32 or uint32 (T = f32, i32, u32; int64 and uint64 are
    /// narrowed to i32 and u32 when every value fits). Repeatable.
    #[arg(
        long,
        value_name = "NAME=FILE.npy",
        value_parser = parse_mod_buffer,
        requires = "mod_source"
    )]
    pub mod_buffer: Vec<(String, PathBuf)>,
    /// Evaluate mask_mod for every key instead of skipping the key blocks it
    /// excludes entirely (the block mask, classified on the GPU once per
    /// problem size).
    #[arg(long, requires = "mask_mod")]
    pub no_block_mask: bool,
}

/// `NAME=FILE.npy` of `--mod-buffer` (clap value parser).
fn parse_mod_buffer(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.trim().is_empty() && !file.is_empty() => {
            Ok((name.trim().to_string(), PathBuf::from(file)))
        }
        Some(_) => Err(format!(
            "expected NAME=FILE.npy with a name and a file (e.g. doc=doc.npy), got {s:?}"
        )),
        None => Err(format!(
            "expected NAME=FILE.npy (the name the mods call, e.g. doc=doc.npy), got {s:?} with no '='"
        )),
    }
}

/// The mods of the command line, checked, and what they are in words.
pub struct LoadedMods {
    pub mods: Mods,
    /// `score_mod F, mask_mod G, buffers doc u32[64], block mask on`.
    pub summary: String,
}

fn read_wgsl(path: &Path, flag: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| bad_input!("{flag} {}: cannot read: {e}", path.display()))
}

fn data_desc(d: &ModData) -> String {
    match d {
        ModData::F32(v) => format!("f32[{}]", v.len()),
        ModData::I32(v) => format!("i32[{}]", v.len()),
        ModData::U32(v) => format!("u32[{}]", v.len()),
    }
}

impl ModArgs {
    /// Whether any mod is given.
    pub fn any(&self) -> bool {
        self.score_mod.is_some() || self.mask_mod.is_some()
    }

    /// Reads and checks the mods (no device needed): `None` without
    /// --score-mod and --mask-mod. A mod that does not parse, type-check or
    /// fit the kernels is bad input naming its file, line and column.
    pub fn load(&self) -> Result<Option<LoadedMods>> {
        if !self.any() {
            return Ok(None);
        }
        let mut b = Mods::builder();
        let mut parts = Vec::new();
        // (origin, flag, source) of each mod, for quoting an error's line.
        let mut sources = Vec::new();
        if let Some(p) = &self.score_mod {
            let origin = p.display().to_string();
            let src = read_wgsl(p, "--score-mod")?;
            b = b.score_mod(ScoreMod::gpu_only(src.clone()).origin(&origin));
            parts.push(format!("score_mod {origin}"));
            sources.push((origin, "--score-mod", src));
        }
        if let Some(p) = &self.mask_mod {
            let origin = p.display().to_string();
            let src = read_wgsl(p, "--mask-mod")?;
            b = b.mask_mod(MaskMod::gpu_only(src.clone()).origin(&origin));
            parts.push(format!("mask_mod {origin}"));
            sources.push((origin, "--mask-mod", src));
        }
        let mut bufs = Vec::new();
        for (i, (name, path)) in self.mod_buffer.iter().enumerate() {
            if self.mod_buffer[..i].iter().any(|(n, _)| n == name) {
                return Err(bad_input!(
                    "--mod-buffer {name}={}: the name {name} is given twice; give each buffer once",
                    path.display()
                ));
            }
            let data =
                io::read_mod_buffer(path, &format!("--mod-buffer {name}={}", path.display()))?;
            bufs.push(format!("{name} {}", data_desc(&data)));
            b = b.buffer(name.clone(), data);
        }
        if self.no_block_mask {
            b = b.block_mask(false);
        }
        let mods = b.build().map_err(|e| mod_error(e, &sources))?;
        parts.push(if bufs.is_empty() {
            "no buffers".to_string()
        } else {
            format!("buffers {}", bufs.join(", "))
        });
        parts.push(match (mods.block_skipping(), self.mask_mod.is_some()) {
            (true, _) => "block mask on (key blocks mask_mod excludes are skipped)".into(),
            (false, true) => "block mask off (--no-block-mask)".into(),
            (false, false) => "block mask off (no mask_mod)".into(),
        });
        Ok(Some(LoadedMods {
            mods,
            summary: parts.join(", "),
        }))
    }
}

/// A library error of `Mods::build` as one line of bad input: the flag, the
/// message's first line (`FILE:LINE:COL: what`), and the source line it
/// points at (naga's multi-line excerpt left out).
fn mod_error(e: wgpu_attention::Error, sources: &[(String, &str, String)]) -> anyhow::Error {
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or_default().trim().to_string();
    if !matches!(e, wgpu_attention::Error::InvalidMod(_)) {
        return anyhow::Error::new(e);
    }
    // The longest origin that prefixes the message is its mod (a path may
    // prefix another).
    let owner = sources
        .iter()
        .filter(|(o, _, _)| first.starts_with(&format!("{o}:")))
        .max_by_key(|(o, _, _)| o.len());
    let Some((origin, flag, src)) = owner else {
        // Buffer names and sizes, or the mods inside a kernel (a clash).
        let flags = if first.starts_with("buffer") || first.starts_with("mod buffers") {
            "--mod-buffer".to_string()
        } else {
            sources
                .iter()
                .map(|(_, f, _)| *f)
                .collect::<Vec<_>>()
                .join(" / ")
        };
        return bad_input!("{flags}: {first}");
    };
    // `FILE:LINE:COL:` → quote that line of the file.
    let line_no = first[origin.len() + 1..]
        .split(':')
        .next()
        .and_then(|l| l.parse::<usize>().ok());
    let quote = line_no
        .and_then(|n| {
            let line = src.lines().nth(n.checked_sub(1)?)?.trim();
            (!line.is_empty()).then(|| format!(" (line {n}: `{line}`)"))
        })
        .unwrap_or_default();
    // An identifier a mod reads but nothing declares: perhaps a buffer not given.
    let hint = first
        .split_once("no definition in scope for identifier: `")
        .and_then(|(_, rest)| rest.split('`').next())
        .filter(|id| !id.is_empty())
        .map(|id| format!("; a buffer `{id}` is given with --mod-buffer {id}=FILE.npy"))
        .unwrap_or_default();
    bad_input!("{flag} {first}{quote}{hint}")
}
