//! Throughput against concurrency, drawn as a PNG: writes (ordo and
//! etcd, through leader and follower) beside reads (backend, nginx,
//! ordo, ordo no-cache).

use crate::report::Measured;
use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use std::path::Path;

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

pub fn draw(m: &Measured, out: &Path) -> Result<()> {
    let font = FONTS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .context("no TrueType font for the chart: apt-get install -y fonts-dejavu-core")?;
    // plotters keeps registered fonts for the life of the process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("the font does not load"))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(out, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(600);
    let writes = [
        ("ordo via leader", "ordo leader", RGBColor(0x1f, 0x77, 0xb4)),
        (
            "ordo via follower",
            "ordo follower",
            RGBColor(0x6b, 0xae, 0xd6),
        ),
        ("etcd via leader", "etcd leader", RGBColor(0xd6, 0x27, 0x28)),
        (
            "etcd via follower",
            "etcd follower",
            RGBColor(0xff, 0x98, 0x96),
        ),
    ];
    let puts = series(&m.conns, &writes, |key, c| m.put_rps(key, c));
    panel(&left, "Writes: 256-byte PUT, req/s", &m.conns, &puts)?;
    let reads = [
        ("backend direct", "backend", RGBColor(0x7f, 0x7f, 0x7f)),
        ("nginx proxy_pass", "nginx", RGBColor(0x2c, 0xa0, 0x2c)),
        ("ordo", "ordo", RGBColor(0x1f, 0x77, 0xb4)),
        ("ordo no-cache", "ordo no-cache", RGBColor(0x94, 0x67, 0xbd)),
    ];
    let gets = series(&m.conns, &reads, |key, c| m.get_rps(key, c));
    panel(&right, "Reads: GET 1 KiB, req/s", &m.conns, &gets)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

type Series<'a> = (&'a str, RGBColor, Vec<(u32, f64)>);

/// One line per `(label, key, color)`: its rate at each concurrency
/// measured.
fn series<'a>(
    conns: &[u32],
    lines: &[(&'a str, &str, RGBColor)],
    rps: impl Fn(&str, u32) -> Option<f64>,
) -> Vec<Series<'a>> {
    lines
        .iter()
        .map(|(label, key, color)| {
            let pts = conns
                .iter()
                .filter_map(|&c| rps(key, c).map(|r| (c, r)))
                .collect();
            (*label, *color, pts)
        })
        .collect()
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    conns: &[u32],
    series: &[Series<'_>],
) -> Result<()> {
    let top = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.15;
    let xmax = conns.iter().copied().max().unwrap_or(1).max(2) as f64 * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0.8f64..xmax).log_scale(), 0f64..top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("client connections (wrk -c)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (label, color, pts) in series {
        let pts: Vec<(f64, f64)> = pts.iter().map(|(c, r)| (*c as f64, *r)).collect();
        let style = ShapeStyle::from(*color).stroke_width(3);
        chart
            .draw_series(LineSeries::new(pts.clone(), style))
            .map_err(|e| anyhow!("{e}"))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
