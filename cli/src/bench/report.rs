//! The `bench run --report` file: self-contained HTML (or SVG) with plots
//! drawn here as inline SVG, no script and nothing fetched.
//!
//! Two plots: throughput as grouped bars (one group per concurrency, one bar
//! per cache and workload), and latency percentiles (p50 to p99.9, log
//! scale) as one line per cache, workload and concurrency.

use std::fmt::Write as _;

use super::results::{RunResult, table};

const PALETTE: [&str; 12] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#000080", "#aec7e8",
];
/// Line dash patterns, one per concurrency.
const DASHES: [&str; 4] = ["none", "8,4", "2,3", "12,3,3,3"];
const W: f64 = 1100.0;
const H: f64 = 380.0;
/// Plot area margins: left, right, top, bottom.
const M: (f64, f64, f64, f64) = (80.0, 250.0, 40.0, 50.0);

/// Escapes text for XML/HTML content and attributes.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The HTML report: a title, both plots, the table.
pub fn html(results: &[RunResult]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>unicache bench run</title>\
<style>body{font-family:sans-serif;margin:16px}pre{font-size:12px}</style></head><body>\n\
<h1>unicache bench run</h1>\n",
    );
    out.push_str(&throughput_svg(results));
    out.push('\n');
    out.push_str(&latency_svg(results));
    let _ = write!(
        out,
        "\n<pre>{}</pre>\n</body></html>\n",
        esc(&table(results))
    );
    out
}

/// Both plots stacked in one SVG document.
pub fn svg(results: &[RunResult]) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\">\
<g>{}</g><g transform=\"translate(0,{H})\">{}</g></svg>\n",
        2.0 * H,
        throughput_svg(results),
        latency_svg(results)
    )
}

/// The series of a result: cache and workload (plus concurrency for latency).
fn series_name(r: &RunResult) -> String {
    format!(
        "{} {}",
        r.cache,
        serde_json::json!(r.op).as_str().unwrap_or("")
    )
}

/// A round axis maximum (1, 2 or 5 times a power of ten) at or above `v`.
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&x| x >= v)
        .unwrap_or(10.0 * p)
}

fn open_svg(title: &str, id: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"{id}\" width=\"{W}\" height=\"{H}\" \
viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\
<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\
<text x=\"{}\" y=\"22\" font-size=\"16\" text-anchor=\"middle\">{}</text>",
        W / 2.0,
        esc(title)
    )
}

/// Y axis with ticks and grid lines; `label` runs along it.
fn y_axis(out: &mut String, ticks: &[(f64, String)], label: &str) {
    let (l, r, t, b) = M;
    for (y, text) in ticks {
        let _ = write!(
            out,
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - r,
            l - 6.0,
            y + 4.0,
            esc(text)
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{l}\" x2=\"{l}\" y1=\"{t}\" y2=\"{}\" stroke=\"black\"/>\
<line x1=\"{l}\" x2=\"{}\" y1=\"{0}\" y2=\"{0}\" stroke=\"black\"/>\
<text transform=\"translate(18,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        H - b,
        W - r,
        (t + H - b) / 2.0,
        esc(label)
    );
}

fn legend(out: &mut String, names: &[String]) {
    let x = W - M.1 + 15.0;
    for (i, n) in names.iter().enumerate() {
        // Long URLs would run off the picture: cut, with an ellipsis.
        let n = match n.char_indices().nth(34) {
            Some((cut, _)) => format!("{}...", &n[..cut]),
            None => n.clone(),
        };
        let y = M.2 + 10.0 + 18.0 * i as f64;
        let _ = write!(
            out,
            "<rect class=\"legend\" x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
<text x=\"{}\" y=\"{}\">{}</text>",
            y - 10.0,
            PALETTE[i % PALETTE.len()],
            x + 18.0,
            y,
            esc(&n)
        );
    }
}

/// Grouped bars: x = concurrency, one bar per cache and workload.
pub fn throughput_svg(results: &[RunResult]) -> String {
    let mut groups: Vec<u64> = results.iter().map(|r| r.concurrency).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut names: Vec<String> = results.iter().map(series_name).collect();
    names.dedup();
    names = dedup_keep_order(names);
    let (l, r, t, b) = M;
    let (pw, ph) = (W - l - r, H - t - b);
    let scale = Scale::for_values(results.iter().map(|r| r.ops_per_sec));
    let title = if scale.log {
        "Throughput (requests/s, log scale) per cache and concurrency"
    } else {
        "Throughput (requests/s) per cache and concurrency"
    };
    let mut out = open_svg(title, "throughput");
    let ticks: Vec<(f64, String)> = scale
        .ticks()
        .into_iter()
        .map(|v| (H - b - ph * scale.frac(v), human(v)))
        .collect();
    y_axis(&mut out, &ticks, "requests per second");
    let gw = pw / groups.len().max(1) as f64;
    let bw = (gw * 0.8) / names.len().max(1) as f64;
    for (gi, c) in groups.iter().enumerate() {
        let gx = l + gw * gi as f64 + gw * 0.1;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">concurrency {c}</text>",
            gx + gw * 0.4,
            H - b + 18.0
        );
        for (si, name) in names.iter().enumerate() {
            let Some(res) = results
                .iter()
                .find(|x| x.concurrency == *c && &series_name(x) == name)
            else {
                continue;
            };
            let hgt = ph * scale.frac(res.ops_per_sec);
            let _ = write!(
                out,
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{hgt:.1}\" fill=\"{}\">\
<title>{}: {:.0}/s</title></rect>",
                gx + bw * si as f64,
                H - b - hgt,
                (bw - 2.0).max(1.0),
                PALETTE[si % PALETTE.len()],
                esc(&format!("{name} x{c}")),
                res.ops_per_sec
            );
        }
    }
    legend(&mut out, &names);
    out.push_str("</svg>");
    out
}

/// A y axis: linear from 0, or log (whole decades) when the values span
/// more than two orders of magnitude (memory vs a network server).
struct Scale {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Scale {
    fn for_values(values: impl Iterator<Item = f64>) -> Scale {
        let v: Vec<f64> = values.filter(|x| x.is_finite() && *x > 0.0).collect();
        let max = v.iter().copied().fold(0.0, f64::max);
        let min = v.iter().copied().fold(f64::MAX, f64::min);
        if max > 0.0 && max / min > 100.0 {
            Scale {
                log: true,
                lo: 10f64.powf(min.log10().floor()),
                hi: 10f64.powf(max.log10().ceil()),
            }
        } else {
            Scale {
                log: false,
                lo: 0.0,
                hi: nice_max(max),
            }
        }
    }

    /// Where `v` sits, 0 (axis) to 1 (top).
    fn frac(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            v / self.hi
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (self.lo.log10() as i32, self.hi.log10() as i32);
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            (0..=5).map(|i| self.hi * i as f64 / 5.0).collect()
        }
    }
}

fn dedup_keep_order(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// 1234567 as 1.23M, 12345 as 12.3k.
fn human(v: f64) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    match v {
        v if v >= 1e6 => format!("{}M", trim(v / 1e6)),
        v if v >= 1e3 => format!("{}k", trim(v / 1e3)),
        v => trim(v),
    }
}

/// Lines over p50, p90, p99, p99.9 on a log scale, one per run.
pub fn latency_svg(results: &[RunResult]) -> String {
    let pts = |r: &RunResult| [r.p50_us, r.p90_us, r.p99_us, r.p999_us];
    let all: Vec<f64> = results.iter().flat_map(pts).filter(|v| *v > 0.0).collect();
    let lo = all.iter().copied().fold(f64::MAX, f64::min).max(1e-3);
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (d0, d1) = (lo.log10().floor(), hi.log10().ceil());
    let (l, r, t, b) = M;
    let (pw, ph) = (W - l - r, H - t - b);
    // Values below the lowest decade (zero) sit on the axis.
    let y = |v: f64| {
        let e = if v > 0.0 { v.log10().max(d0) } else { d0 };
        H - b - ph * ((e - d0) / (d1 - d0).max(1.0))
    };
    let mut out = open_svg("Latency percentiles (microseconds, log scale)", "latency");
    let ticks: Vec<(f64, String)> = (d0 as i32..=d1 as i32)
        .map(|e| {
            let v = 10f64.powi(e);
            (y(v), human_us(v))
        })
        .collect();
    y_axis(&mut out, &ticks, "latency (us)");
    let xs: Vec<f64> = (0..4)
        .map(|i| l + pw * (0.1 + 0.8 * i as f64 / 3.0))
        .collect();
    for (x, label) in xs.iter().zip(["p50", "p90", "p99", "p99.9"]) {
        let _ = write!(
            out,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            H - b + 18.0
        );
    }
    // Colour: cache and workload (as in the throughput plot); dashes: concurrency.
    let names = dedup_keep_order(results.iter().map(series_name).collect());
    let mut conc: Vec<u64> = results.iter().map(|r| r.concurrency).collect();
    conc.sort_unstable();
    conc.dedup();
    for res in results {
        let si = names
            .iter()
            .position(|n| *n == series_name(res))
            .unwrap_or(0);
        let ci = conc.iter().position(|c| *c == res.concurrency).unwrap_or(0);
        let color = PALETTE[si % PALETTE.len()];
        let dash = DASHES[ci % DASHES.len()];
        let points: Vec<String> = xs
            .iter()
            .zip(pts(res))
            .map(|(x, v)| format!("{x:.1},{:.1}", y(v)))
            .collect();
        let name = format!("{} x{}", series_name(res), res.concurrency);
        let _ = write!(
            out,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" \
stroke-dasharray=\"{dash}\" points=\"{}\"><title>{}</title></polyline>",
            points.join(" "),
            esc(&name)
        );
        for p in &points {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                out,
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{color}\"/>"
            );
        }
    }
    legend(&mut out, &names);
    dash_legend(&mut out, &conc, names.len());
    out.push_str("</svg>");
    out
}

/// The dash pattern of each concurrency, under the colour legend.
fn dash_legend(out: &mut String, conc: &[u64], below: usize) {
    let x = W - M.1 + 15.0;
    for (i, c) in conc.iter().enumerate() {
        let y = M.2 + 10.0 + 18.0 * (below + 1 + i) as f64;
        let (x2, ly, tx) = (x + 30.0, y - 4.0, x + 36.0);
        let dash = DASHES[i % DASHES.len()];
        let _ = write!(
            out,
            "<line x1=\"{x}\" x2=\"{x2}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"black\" stroke-width=\"2\" \
stroke-dasharray=\"{dash}\"/><text x=\"{tx}\" y=\"{y}\">concurrency {c}</text>"
        );
    }
}

fn human_us(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}s", v / 1e6),
        v if v >= 1e3 => format!("{}ms", v / 1e3),
        v => format!("{v}us"),
    }
}
