//! The classic multi-head attention layer (d_model 512, 8 heads) on token
//! embeddings with sinusoidal positional encoding, on the default adapter,
//! checked against the f64 reference of the whole layer.
//!
//! ```text
//! cargo run --release --example multi_head                 # B=2 N=128, self-attention, causal
//! cargo run --release --example multi_head -- weights.safetensors   # load q/k/v/o_proj from a file
//! ```
//! Without a file the weights are random (seeded) and saved to
//! `target/multi_head_weights.safetensors`, then loaded back, to show the round trip.

use std::time::Instant;

use wgpu_attention::kernels::posenc::record_posenc;
use wgpu_attention::reference::{self, MhaReferenceOptions};
use wgpu_attention::verify::verify;
use wgpu_attention::{
    Gpu, Masking, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, Tensor, TuningMode,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new_blocking(&Default::default())?;
    println!("adapter : {}", gpu.describe());
    let cfg = MhaConfig::new(512, 8)?;
    let (b, n) = (2, 128);

    // Weights: from the file named on the command line, or random + saved + reloaded.
    let weights = match std::env::args().nth(1) {
        Some(path) => MhaWeights::load(&path, &cfg, "")?,
        None => {
            let path = std::path::Path::new("target/multi_head_weights.safetensors");
            std::fs::create_dir_all("target")?;
            MhaWeights::random(&cfg, 42)?.save(path, "")?;
            MhaWeights::load(path, &cfg, "")?
        }
    };
    let layer = MultiHeadAttention::new(&gpu, cfg, &weights)?;
    println!("layer   : d_model {} heads {} head_dim {} bias {}; input [B={b}, N={n}, d_model], causal self-attention", cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.bias);

    // Token embeddings (deterministic pseudo-random).
    let x: Vec<f32> = (0..b * n * cfg.d_model)
        .map(|i| ((i as u64 * 2654435761 % 1000) as f32 / 500.0 - 1.0) * 0.5)
        .collect();
    let xt = Tensor::from_slice(&gpu, &x, &[b, n, cfg.d_model])?;
    let opts = MhaOptions {
        masking: Masking {
            causal: true,
            ..Default::default()
        },
        // Kernel variants measured on this adapter (cached after the first run).
        tuning: TuningMode::Autotune,
        ..Default::default()
    };

    // Positional encoding + layer, recorded into one submission.
    let run = |timed: bool| -> wgpu_attention::Result<(Tensor, Option<f64>)> {
        let mut rec = if timed {
            gpu.timed_recorder()?
        } else {
            gpu.recorder()
        };
        let pe = record_posenc(&mut rec, &xt, 0)?;
        let y = layer.record_forward(&mut rec, &pe, None, &opts)?;
        let ms = if timed {
            Some(pollster::block_on(rec.submit_timed())?)
        } else {
            rec.submit().map(|_| None)?
        };
        Ok((y, ms))
    };
    let t0 = Instant::now();
    let (y, _) = run(false)?;
    let got = y.to_vec_blocking()?;
    println!(
        "first run (incl. pipeline compile): {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    if gpu.timed_recorder().is_ok() {
        let mut times: Vec<f64> = (0..5)
            .map(|_| run(true).map(|(_, ms)| ms.unwrap_or(0.0)))
            .collect::<Result<_, _>>()?;
        times.sort_by(f64::total_cmp);
        println!(
            "time    : {:.2} ms median of 5 (GPU timestamps: posenc + 4 projections + attention)",
            times[2]
        );
    }

    let t = Instant::now();
    let x_pe: Vec<f64> = reference::posenc(&x, b, n, cfg.d_model, 0);
    let ropts = MhaReferenceOptions {
        masking: opts.masking.clone(),
        ..Default::default()
    };
    let want = reference::multi_head_attention(&x_pe, &x_pe, [b, n, n], &cfg, &weights, &ropts);
    let report = verify(&got, &want);
    println!(
        "reference (f64 CPU, {:.0} ms): {report}",
        t.elapsed().as_secs_f64() * 1e3
    );
    if report.passes(1e-5) {
        println!("PASS: relative L2 error {:.2e} <= 1e-5", report.rel_l2);
        Ok(())
    } else {
        println!("FAIL: relative L2 error {:.2e} > 1e-5", report.rel_l2);
        std::process::exit(1)
    }
}
