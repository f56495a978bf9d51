//! The pictures `make bench` draws beside its tables (SVG, plotters): the
//! MB/s the ranks moved over time while saving a checkpoint and while
//! loading it, and the latency percentiles of 4 KiB random reads, each
//! with a line per target (the local disk, aifs with 1 and 2 replicas).
//! Throughput is the last run's; percentiles are medians over the runs.
use crate::ckpt::{med, Table};
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The rows drawn over time: the widest save and the 4-rank load.
fn throughput_rows(t: &Table) -> Vec<(&'static str, &str)> {
    let save = t.rows.iter().rev().find(|r| r.0.starts_with("save:")).map(|r| r.0.as_str());
    let load = t.rows.iter().find(|r| r.0.starts_with("load: 4 ranks")).or_else(|| t.rows.iter().find(|r| r.0.starts_with("load:")));
    [("ckpt-save.svg", save), ("ckpt-load.svg", load.map(|r| r.0.as_str()))]
        .into_iter()
        .filter_map(|(file, row)| Some((file, row?)))
        .collect()
}

fn colour(i: usize) -> RGBColor {
    [RGBColor(90, 90, 90), RGBColor(31, 119, 180), RGBColor(214, 39, 40)][i % 3]
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// Draw the pictures of `t` (targets named `labels`) into `dir`; the
/// files written.
pub fn write(t: &Table, labels: &[String], dir: &Path, size: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for (file, row) in throughput_rows(t) {
        let Some((_, runs)) = t.rows.iter().find(|r| r.0 == row) else { continue };
        let lines: Vec<(String, Vec<(f64, f64)>)> =
            labels.iter().zip(runs).map(|(l, runs)| (l.clone(), runs.last().map(|m| m.trace.clone()).unwrap_or_default())).collect();
        let path = dir.join(file);
        over_time(&path, &format!("{row} ({size})"), &lines)?;
        out.push(path);
    }
    if let Some((row, runs)) = t.rows.iter().find(|r| r.0.starts_with("4 KiB random reads, QD1")) {
        let lines: Vec<(String, Vec<(f64, f64)>)> = labels
            .iter()
            .zip(runs)
            .map(|(l, runs)| {
                let pcts = runs.first().map(|m| m.pcts.iter().map(|p| p.0).collect::<Vec<_>>()).unwrap_or_default();
                let points = pcts.iter().map(|&q| (q, med(runs, |m| m.pcts.iter().find(|p| p.0 == q).map_or(0.0, |p| p.1)))).collect();
                (l.clone(), points)
            })
            .collect();
        let path = dir.join("random-read-latency.svg");
        percentiles(&path, &format!("{row}: latency percentiles"), &lines)?;
        out.push(path);
    }
    Ok(out)
}

/// A chart's frame: the picture at `path`, its title, label areas.
fn frame<'a, 'p>(root: &'a DrawingArea<SVGBackend<'p>, plotters::coord::Shift>, title: &str) -> Result<ChartBuilder<'a, 'a, SVGBackend<'p>>> {
    root.fill(&WHITE).map_err(plot_err)?;
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 18)).margin(12).x_label_area_size(40).y_label_area_size(70);
    Ok(b)
}

/// Draw `lines` (a label and its points each) on `chart`, with a legend.
fn draw_lines<'a, X, Y>(chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>, lines: &[(String, Vec<(f64, f64)>)]) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (label, points)) in lines.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(plot_err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.9)).border_style(BLACK).draw().map_err(plot_err)?;
    Ok(())
}

/// MB/s over seconds, a line per target.
fn over_time(path: &Path, title: &str, lines: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let xmax = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0)).fold(0.1, f64::max);
    let ymax = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    let mut chart = frame(&root, title)?.build_cartesian_2d(0.0..xmax, 0.0..ymax).map_err(plot_err)?;
    chart.configure_mesh().x_desc("seconds").y_desc("MB/s").draw().map_err(plot_err)?;
    draw_lines(&mut chart, lines)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Latency (µs, log scale) at each percentile, a line per target; the
/// percentiles are evenly spaced on the axis, whatever their values.
fn percentiles(path: &Path, title: &str, lines: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let pcts: Vec<f64> = lines.iter().map(|l| l.1.iter().map(|p| p.0).collect::<Vec<_>>()).max_by_key(|v| v.len()).unwrap_or_default();
    let ymax = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).fold(10.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    let n = pcts.len().max(1);
    let mut chart = frame(&root, title)?.build_cartesian_2d(-0.3..(n as f64 - 0.7), (1.0..ymax).log_scale()).map_err(plot_err)?;
    let label = |x: &f64| {
        let i = x.round();
        match (i - x).abs() < 1e-6 && i >= 0.0 {
            true => pcts.get(i as usize).map_or(String::new(), |q| if *q >= 100.0 { "max".into() } else { format!("p{q}") }),
            false => String::new(),
        }
    };
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .x_desc("percentile")
        .y_desc("µs")
        .draw()
        .map_err(plot_err)?;
    // Evenly spaced: the k-th percentile at k.
    let spaced: Vec<(String, Vec<(f64, f64)>)> =
        lines.iter().map(|(name, points)| (name.clone(), points.iter().enumerate().map(|(k, p)| (k as f64, p.1.max(1.0))).collect())).collect();
    draw_lines(&mut chart, &spaced)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
