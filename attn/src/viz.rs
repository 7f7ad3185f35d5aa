//! `attn viz`: the attention weights of one (batch, head) as a heatmap PNG.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rand::{Rng, SeedableRng};
use wgpu_attention::mask::{MaskValues, ADDITIVE_MASKED};
use wgpu_attention::{alibi_slopes, attention, AttentionOptions, AttentionPath, AttnShape};

use crate::args::{check_softcap, upload_mask, DeviceArgs, InputArgs, Inputs, LayoutArg, MaskArgs};
use crate::error::bad_input;
use crate::io;
use crate::plot::Heatmap;

#[derive(Args)]
#[command(after_help = "Examples:
  attn viz --random 1,2,32,16 --seed 7 --causal top-left --out causal.png
  attn viz --random 2,4,48,32 --window 4,0 --overlay-mask --head 3 --out window.png
  attn viz --q q.npy --k k.npy --v v.npy --mask keep.npy --batch 1 --head 0 --overlay-mask --out p.png

The weights come from the unfused path (the one that materializes them); rows
are queries i (top to bottom), columns keys j. With --overlay-mask every cell a
mask excludes (causal, window, key lengths, a false bool entry, an additive
-inf) is tinted red, and hatched where cells are large enough.")]
pub struct VizArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Random Q, K, V of [B, H, N, D] (Gaussian, seeded) instead of files.
    #[arg(long, value_name = "B,H,N,D", conflicts_with_all = ["q", "k", "v", "safetensors"])]
    pub random: Option<String>,
    /// Seed of --random.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub masks: MaskArgs,
    /// Soft-capping c·tanh(s/c) of the scaled scores.
    #[arg(long, value_name = "C")]
    pub softcap: Option<f32>,
    /// Batch index to show.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Query head to show.
    #[arg(long, default_value_t = 0)]
    pub head: usize,
    /// Tint and hatch the cells the masks exclude.
    #[arg(long)]
    pub overlay_mask: bool,
    /// Output PNG.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Image width in pixels.
    #[arg(long, default_value_t = 900)]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 800)]
    pub height: u32,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn random_inputs(spec: &str, seed: u64) -> Result<Inputs> {
    let dims: Vec<usize> = spec
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad_input!("--random {spec}: expected B,H,N,D (four positive integers)"))?;
    let [b, h, n, d]: [usize; 4] = dims
        .as_slice()
        .try_into()
        .map_err(|_| bad_input!("--random {spec}: expected B,H,N,D (four positive integers)"))?;
    if [b, h, n, d].contains(&0) {
        return Err(bad_input!("--random {spec}: every size must be at least 1"));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut normal = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                // Box–Muller.
                let u1: f64 = rng.random_range(f64::EPSILON..1.0);
                let u2: f64 = rng.random_range(0.0..1.0);
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect()
    };
    let len = b * h * n * d;
    Ok(Inputs {
        shape: AttnShape {
            b,
            hq: h,
            hkv: h,
            nq: n,
            nk: n,
            d,
        },
        layout: LayoutArg::Bhnd,
        q: io::RawArray::f32(vec![b, h, n, d], &normal(len)),
        k: io::RawArray::f32(vec![b, h, n, d], &normal(len)),
        v: io::RawArray::f32(vec![b, h, n, d], &normal(len)),
    })
}

pub fn main(a: VizArgs) -> Result<()> {
    io::check_output(&a.out, "--out")?;
    if a.width < 200 || a.height < 200 {
        return Err(bad_input!(
            "--width {} --height {}: expected at least 200 pixels each",
            a.width,
            a.height
        ));
    }
    let inputs = match &a.random {
        Some(spec) => random_inputs(spec, a.seed)?,
        None if a.input.is_empty() => {
            return Err(bad_input!(
                "no input: give --q/--k/--v, --safetensors FILE, or --random B,H,N,D"
            ))
        }
        None => a.input.load()?,
    };
    let sh = inputs.shape;
    if a.batch >= sh.b {
        return Err(bad_input!(
            "--batch {}: expected 0..={} (B = {})",
            a.batch,
            sh.b - 1,
            sh.b
        ));
    }
    if a.head >= sh.hq {
        return Err(bad_input!(
            "--head {}: expected 0..={} (Hq = {})",
            a.head,
            sh.hq - 1,
            sh.hq
        ));
    }
    check_softcap(a.softcap)?;
    let masking = a.masks.masking(sh.b, sh.nk)?;
    let host_mask = a.masks.host_mask([sh.b, sh.hq, sh.nq, sh.nk])?;
    let slopes = a.masks.alibi.then(|| alibi_slopes(sh.hq));
    let sinks = a.masks.sinks(sh.hq)?;

    let gpu = a.device.open()?;
    let [q, k, v] = inputs.upload(&gpu, None)?;
    let mask = upload_mask(&gpu, host_mask.as_ref())?;
    let out = attention(
        &q,
        &k,
        &v,
        &AttentionOptions {
            scale: a.masks.scale,
            masking: masking.clone(),
            mask: mask.as_ref(),
            alibi: slopes.as_deref(),
            softcap: a.softcap,
            sinks: sinks.as_deref(),
            return_weights: true,
            path: AttentionPath::Unfused,
            ..Default::default()
        },
    )?;
    let p = out
        .weights
        .context("the unfused path returned no weights")?
        .to_vec_blocking()?;
    let (nq, nk) = (sh.nq, sh.nk);
    let base = (a.batch * sh.hq + a.head) * nq * nk;
    let values = &p[base..base + nq * nk];
    let masked: Option<Vec<bool>> = a.overlay_mask.then(|| {
        (0..nq * nk)
            .map(|x| {
                let (i, j) = (x / nk, x % nk);
                let rules = !masking.visible(a.batch, i, j, nq, nk);
                let dense = host_mask.as_ref().is_some_and(|m| {
                    let at = m.index(a.batch, a.head, i, j);
                    match &m.values {
                        MaskValues::Bool(v) => !v[at],
                        MaskValues::Additive(v) => v[at] <= ADDITIVE_MASKED,
                    }
                });
                rules || dense
            })
            .collect()
    });
    let title = format!(
        "attention weights, batch {} head {} of [B={}, Hq={}, Nq={nq}, Nk={nk}]{}",
        a.batch,
        a.head,
        sh.b,
        sh.hq,
        if a.overlay_mask { " (red: masked)" } else { "" }
    );
    let png = Heatmap {
        title,
        rows: nq,
        cols: nk,
        values,
        masked: masked.as_deref(),
        width: a.width,
        height: a.height,
    }
    .render()?;
    io::write_atomic(&a.out, &png)?;
    println!(
        "wrote {} ({}×{} px): weights of batch {} head {} on {}",
        a.out.display(),
        a.width,
        a.height,
        a.batch,
        a.head,
        gpu.describe()
    );
    Ok(())
}
