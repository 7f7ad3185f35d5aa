//! `attn`: the wgpu-attention library on the command line.
//!
//! - `info`: every adapter with its features and the limits that matter for attention.
//! - `run`: attention on `.npy` / `.safetensors` inputs, optionally checked against
//!   the f64 CPU reference; `mha`: the multi-head layer with weights from `.safetensors`.
//! - `validate`: the library's case matrix on every adapter.
//! - `bench`: paths × shapes, GPU timestamps, the project's GEMM as the ceiling.
//! - `viz`: the attention weights of one (batch, head) as a heatmap PNG.
//!
//! Exit codes: 0 success, 1 a result failed its check (or the GPU failed at run
//! time), 2 bad input (one line on stderr naming the flag or file).

mod args;
mod bench;
mod check;
mod error;
mod info;
mod io;
mod mha;
mod plot;
mod run;
mod tune;
mod validate;
mod varlen;
mod viz;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "attn",
    version,
    about = "Transformer attention on any wgpu adapter (Vulkan, Metal, DX12, GL), checked against an f64 CPU reference",
    after_help = "Examples:\n  attn info\n  attn run --q q.npy --k k.npy --v v.npy --causal bottom-right --out o.npy --check\n  attn validate --json report.json\n  attn bench --path fused,unfused --n 512 --d 64\n  attn tune --n 1024 --d 64\n  attn viz --random 1,2,32,16 --causal top-left --out weights.png\n\nExit codes: 0 ok, 1 a check failed (or the GPU failed at run time), 2 bad input.\nAdapter choice also honours WGPU_BACKEND and WGPU_ADAPTER_NAME."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Adapters with their features and the limits that matter for attention.
    Info(info::InfoArgs),
    /// Attention on Q, K, V from .npy or .safetensors files.
    Run(Box<run::RunArgs>),
    /// The multi-head attention layer with weights from a .safetensors file.
    Mha(Box<mha::MhaArgs>),
    /// The library's validation matrix (shapes × options × paths) on every adapter.
    Validate(validate::ValidateArgs),
    /// Time the attention paths over shapes, with the project's GEMM as the ceiling.
    Bench(Box<bench::BenchArgs>),
    Tune(tune::TuneArgs),
    /// The attention weights of one (batch, head) as a heatmap PNG.
    Viz(Box<viz::VizArgs>),
}

/// Clap's usage errors as one line on stderr, exit 2 (help and version as usual).
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            let text = e.render().to_string();
            let line = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("attn: {line} (see --help)");
            std::process::exit(2);
        }
    }
}

fn main() {
    let cli = parse();
    let result = match cli.command {
        Command::Info(a) => info::main(a),
        Command::Run(a) => run::run_main(*a),
        Command::Mha(a) => mha::mha_main(*a),
        Command::Validate(a) => validate::main(a),
        Command::Bench(a) => bench::main(*a),
        Command::Tune(a) => tune::main(a),
        Command::Viz(a) => viz::main(*a),
    };
    if let Err(e) = result {
        let (code, line) = error::report(&e);
        eprintln!("attn: {line}");
        std::process::exit(code);
    }
}
