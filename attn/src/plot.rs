//! PNG charts through plotters' bitmap backend. Text is drawn with DejaVu Sans
//! compiled into the binary (plotters' `ab_glyph` feature), so no fontconfig or
//! system font is needed; the PNG is encoded with the `png` crate.

use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Family name the embedded font is registered under.
const FONT: &str = "sans-serif";

fn ensure_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Both are valid TrueType fonts shipped in the dejavu crate.
        let _ = register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// RGB8 pixels as PNG bytes.
pub fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(rgb)?;
        w.finish()?;
    }
    Ok(out)
}

/// Matplotlib's viridis at `t` in [0, 1] (piecewise linear over 8 stops).
pub fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 8] = [
        (68, 1, 84),
        (70, 50, 127),
        (54, 92, 141),
        (39, 127, 143),
        (31, 162, 136),
        (74, 194, 110),
        (160, 219, 57),
        (254, 232, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// A heatmap of `values` (`rows × cols`, row-major) with axes "key j" / "query i",
/// a colour bar and a title; `masked` cells are tinted and hatched.
pub struct Heatmap<'a> {
    pub title: String,
    pub rows: usize,
    pub cols: usize,
    pub values: &'a [f32],
    pub masked: Option<&'a [bool]>,
    pub width: u32,
    pub height: u32,
}

impl Heatmap<'_> {
    pub fn render(&self) -> Result<Vec<u8>> {
        ensure_fonts();
        let (w, h) = (self.width, self.height);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(perr)?;
            let root = root
                .titled(&self.title, (FONT, 20).into_font())
                .map_err(perr)?;
            let bar_w = 110.min(w / 4);
            let (main, bar) = root.split_horizontally(w - bar_w);
            let (nq, nk) = (self.rows, self.cols);
            let vmax = self
                .values
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(0.0f32, f32::max)
                .max(f32::MIN_POSITIVE) as f64;
            // Ticks at cell centres (index + 0.5), every `step` cells; row 0 at
            // the top: row i spans y = nq - i - 1 .. nq - i.
            let x_ticks: Vec<f64> = (0..nk)
                .step_by(tick_step(nk))
                .map(|j| j as f64 + 0.5)
                .collect();
            let y_ticks: Vec<f64> = (0..nq)
                .step_by(tick_step(nq))
                .map(|i| (nq - i) as f64 - 0.5)
                .collect();
            let (xn, yn) = (x_ticks.len(), y_ticks.len());
            let mut chart = ChartBuilder::on(&main)
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(
                    Ticked::new(nk as f64, x_ticks),
                    Ticked::new(nq as f64, y_ticks),
                )
                .map_err(perr)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("key j")
                .y_desc("query i")
                .x_labels(xn)
                .y_labels(yn)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 15))
                .x_label_formatter(&|v| format!("{}", (*v - 0.5).round() as i64))
                .y_label_formatter(&|v| format!("{}", (nq as f64 - *v - 0.5).round() as i64))
                .draw()
                .map_err(perr)?;
            let cell = |i: usize, j: usize| {
                [
                    (j as f64, (nq - i) as f64),
                    ((j + 1) as f64, (nq - i - 1) as f64),
                ]
            };
            chart
                .draw_series((0..nq).flat_map(|i| {
                    (0..nk).map(move |j| {
                        let v = self.values[i * nk + j] as f64;
                        Rectangle::new(cell(i, j), viridis(v / vmax).filled())
                    })
                }))
                .map_err(perr)?;
            if let Some(masked) = self.masked {
                let px = chart.plotting_area().dim_in_pixel();
                let cell_px = (px.0 as f64 / nk as f64).min(px.1 as f64 / nq as f64);
                let tint = RGBAColor(230, 60, 60, 0.45);
                let cells: Vec<(usize, usize)> = (0..nq)
                    .flat_map(|i| (0..nk).map(move |j| (i, j)))
                    .filter(|&(i, j)| masked[i * nk + j])
                    .collect();
                chart
                    .draw_series(
                        cells
                            .iter()
                            .map(|&(i, j)| Rectangle::new(cell(i, j), tint.filled())),
                    )
                    .map_err(perr)?;
                if cell_px >= 6.0 {
                    let hatch = RGBAColor(255, 255, 255, 0.8);
                    chart
                        .draw_series(cells.iter().map(|&(i, j)| {
                            let [a, b] = cell(i, j);
                            PathElement::new(vec![(a.0, b.1), (b.0, a.1)], hatch.stroke_width(1))
                        }))
                        .map_err(perr)?;
                }
            }
            // Colour bar.
            let mut cb = ChartBuilder::on(&bar)
                .margin_top(12)
                .margin_bottom(57)
                .margin_right(8)
                .y_label_area_size(55)
                .build_cartesian_2d(0f64..1f64, 0f64..vmax)
                .map_err(perr)?;
            cb.configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .y_labels(6)
                .y_desc("weight")
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 14))
                .y_label_formatter(&|v| format!("{v:.2}"))
                .draw()
                .map_err(perr)?;
            let steps = 128;
            cb.draw_series((0..steps).map(|s| {
                let (a, b) = (s as f64 / steps as f64, (s + 1) as f64 / steps as f64);
                Rectangle::new([(0.0, a * vmax), (1.0, b * vmax)], viridis(a).filled())
            }))
            .map_err(perr)?;
            root.present().map_err(perr)?;
        }
        encode_png(w, h, &buf)
    }
}

/// A linear axis `0..end` with the tick positions given (plotters' own
/// `with_key_points` wrapper drops the value formatting `configure_mesh` needs).
struct Ticked {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(end: f64, ticks: Vec<f64>) -> Self {
        Ticked {
            inner: (0.0..end).into(),
            ticks,
        }
    }
}

impl Ranged for Ticked {
    // Labels come from the chart's label formatters.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// Cells between index ticks: 1, 2 or 5 times a power of ten, at most ~10 ticks.
fn tick_step(n: usize) -> usize {
    let mut p = 1;
    loop {
        for m in [1, 2, 5] {
            if n.div_ceil(m * p) <= 10 {
                return m * p;
            }
        }
        p *= 10;
    }
}

/// One series of a line chart over configurations.
pub struct Series {
    pub name: String,
    /// `(configuration index, value)`; missing configurations are skipped.
    pub points: Vec<(usize, f64)>,
}

/// A line chart: one series per path over the configurations, plus an optional
/// horizontal ceiling line.
pub struct LineChart<'a> {
    pub title: String,
    pub y_desc: String,
    pub labels: &'a [String],
    pub series: Vec<Series>,
    /// A reference drawn dashed through `(x, y)` points (e.g. the GEMM ceiling).
    pub ceiling: Option<(String, Vec<(f64, f64)>)>,
    pub width: u32,
    pub height: u32,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

impl LineChart<'_> {
    pub fn render(&self) -> Result<Vec<u8>> {
        ensure_fonts();
        let (w, h) = (self.width, self.height);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(perr)?;
            let n = self.labels.len().max(1);
            let mut ymax = self
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .chain(self.ceiling.iter().flat_map(|c| c.1.iter().map(|p| p.1)))
                .filter(|v| v.is_finite())
                .fold(0.0f64, f64::max);
            if ymax <= 0.0 {
                ymax = 1.0;
            }
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, (FONT, 20))
                .margin(15)
                .x_label_area_size(50)
                .y_label_area_size(70)
                .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax * 1.15)
                .map_err(perr)?;
            let labels = self.labels;
            chart
                .configure_mesh()
                .x_labels(n.min(12))
                .x_label_formatter(&|v| {
                    let i = v.round();
                    if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                        labels[i as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .x_desc("configuration")
                .y_desc(self.y_desc.as_str())
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 15))
                .draw()
                .map_err(perr)?;
            if let Some((name, points)) = &self.ceiling {
                let c = RGBColor(200, 30, 30);
                let points: Vec<(f64, f64)> =
                    points.iter().copied().filter(|p| p.1.is_finite()).collect();
                chart
                    .draw_series(DashedLineSeries::new(points, 8, 5, c.stroke_width(2)))
                    .map_err(perr)?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
            }
            for (k, s) in self.series.iter().enumerate() {
                let c = PALETTE[k % PALETTE.len()];
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .filter(|p| p.1.is_finite())
                    .map(|&(i, v)| (i as f64, v))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(perr)?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                    .map_err(perr)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 13))
                .draw()
                .map_err(perr)?;
            root.present().map_err(perr)?;
        }
        encode_png(w, h, &buf)
    }
}
