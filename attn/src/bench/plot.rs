//! `attn bench --plot`: the records as a line chart (one series per path and
//! option over the configurations, the GEMM ceiling dashed), drawn by the
//! generic chart code of `crate::plot`.

use anyhow::Result;

use super::report::{path_label, Record};
use super::{BenchArgs, Metric};
use crate::plot::{LineChart, Series};

/// The PNG of `records` (titled `title`) with `--plot-metric` on the y axis.
/// The x axis is the shapes; each dtype of `--dtype` has its own series.
pub fn render(records: &[Record], a: &BenchArgs, gemm: f64, title: &str) -> Result<Vec<u8>> {
    let mut configs = Vec::new();
    let mut labels = Vec::new();
    for r in records {
        if !configs.contains(&r.config()) {
            configs.push(r.config());
            labels.push(r.shape_label());
        }
    }
    let index = |r: &Record| configs.iter().position(|c| *c == r.config()).unwrap_or(0);
    let value = |r: &Record| match a.plot_metric {
        Metric::Gflops => r.gflops,
        Metric::Ms => r.median_ms,
    };
    // One series per path and option, and per dtype when several were run.
    let several = a.dtype.len() > 1;
    let series = a
        .path
        .iter()
        .flat_map(|&p| a.options.iter().map(move |&o| (p, o)))
        .flat_map(|(p, o)| a.dtype.iter().map(move |&dt| (p, o, dt)))
        .map(|(p, o, dt)| Series {
            name: if several {
                format!("{} {dt}", path_label(p, o))
            } else {
                path_label(p, o)
            },
            points: records
                .iter()
                .filter(|r| r.path == p && r.options == o && r.dtype == dt)
                .filter_map(|r| value(r).map(|v| (index(r), v)))
                .collect(),
        })
        .collect();
    let n = configs.len();
    let ceiling = match a.plot_metric {
        Metric::Gflops => (
            format!("GEMM {}³: {gemm:.1} GFLOP/s", a.gemm_n),
            vec![(-0.5, gemm), (n as f64 - 0.5, gemm)],
        ),
        Metric::Ms => (
            "at GEMM speed".to_string(),
            configs
                .iter()
                .enumerate()
                .map(|(i, (c, causal))| (i as f64, c.flops(*causal) / gemm / 1e6))
                .collect(),
        ),
    };
    LineChart {
        title: title.to_string(),
        y_desc: match a.plot_metric {
            Metric::Gflops => "GFLOP/s".into(),
            Metric::Ms => "median ms".into(),
        },
        labels: &labels,
        series,
        ceiling: Some(ceiling),
        width: 1100,
        height: 650,
    }
    .render()
}
