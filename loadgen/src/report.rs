//! Latency histograms, per-second progress lines and the final summary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

/// Microseconds from 1 us to 10 minutes at three significant digits.
pub fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(histogram) => histogram,
        Err(_) => unreachable!("constant bounds are valid"),
    }
}

/// What the workers record, shared with the reporter. One lock per batch acknowledgement.
pub struct Stats {
    /// Produce-to-acknowledgement latency from each record's intended send time.
    pub latency: Histogram<u64>,
    /// How late records left compared with their intended send time (open loop only).
    pub send_lag: Histogram<u64>,
    /// From the producer's send stamp to a consumer receiving the record.
    pub end_to_end: Histogram<u64>,
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            latency: histogram(),
            send_lag: histogram(),
            end_to_end: histogram(),
            records: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.send_lag.add(&other.send_lag);
        let _ = self.end_to_end.add(&other.end_to_end);
        self.records += other.records;
        self.bytes += other.bytes;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// Stats for the current second (drained by the reporter) and for the measured run (warm-up
/// excluded).
pub struct Shared {
    pub interval: Mutex<Stats>,
    pub measured: Mutex<Stats>,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            interval: Mutex::new(Stats::new()),
            measured: Mutex::new(Stats::new()),
        })
    }
}

pub fn interval_line(second: u64, stats: &Stats) -> String {
    let mb = stats.bytes as f64 / 1e6;
    if stats.latency.is_empty() {
        return format!(
            "{second:>4}s {:>9} rec/s {mb:>8.1} MB/s errors {}",
            stats.records, stats.errors
        );
    }
    let mut line = format!(
        "{second:>4}s {:>9} rec/s {mb:>8.1} MB/s errors {} | p50 {} us p99 {} us p99.9 {} us max {} us",
        stats.records,
        stats.errors,
        stats.latency.value_at_quantile(0.5),
        stats.latency.value_at_quantile(0.99),
        stats.latency.value_at_quantile(0.999),
        stats.latency.max(),
    );
    if !stats.end_to_end.is_empty() {
        line.push_str(&format!(
            " | e2e p50 {} us p99 {} us",
            stats.end_to_end.value_at_quantile(0.5),
            stats.end_to_end.value_at_quantile(0.99)
        ));
    }
    line
}

fn percentiles(histogram: &Histogram<u64>) -> serde_json::Value {
    json!({
        "count": histogram.len(),
        "p50_us": histogram.value_at_quantile(0.50),
        "p90_us": histogram.value_at_quantile(0.90),
        "p99_us": histogram.value_at_quantile(0.99),
        "p99_9_us": histogram.value_at_quantile(0.999),
        "p99_99_us": histogram.value_at_quantile(0.9999),
        "max_us": histogram.max(),
    })
}

/// The final summary as JSON (also what `--json` writes).
pub fn summary(
    stats: &Stats,
    measured: Duration,
    open_loop: bool,
    facts: serde_json::Value,
) -> serde_json::Value {
    let seconds = measured.as_secs_f64().max(1e-9);
    json!({
        "records": stats.records,
        "bytes": stats.bytes,
        "seconds": seconds,
        "records_per_second": stats.records as f64 / seconds,
        "mb_per_second": stats.bytes as f64 / 1e6 / seconds,
        "errors": stats.errors,
        "first_error": stats.first_error,
        "mode": if open_loop { "open-loop" } else { "closed-loop" },
        "produce_latency": percentiles(&stats.latency),
        "send_lag": if open_loop { percentiles(&stats.send_lag) } else { serde_json::Value::Null },
        "end_to_end_latency": if stats.end_to_end.is_empty() { serde_json::Value::Null } else { percentiles(&stats.end_to_end) },
        "facts": facts,
    })
}

pub fn summary_text(summary: &serde_json::Value) -> String {
    let latency = &summary["produce_latency"];
    let mut text = format!(
        "records {} bytes {} over {:.2} s: {:.0} rec/s, {:.1} MB/s, errors {}\n\
         produce latency ({}): p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, p99.99 {} us, max {} us",
        summary["records"], summary["bytes"], summary["seconds"].as_f64().unwrap_or(0.0),
        summary["records_per_second"].as_f64().unwrap_or(0.0), summary["mb_per_second"].as_f64().unwrap_or(0.0),
        summary["errors"], summary["mode"].as_str().unwrap_or(""),
        latency["p50_us"], latency["p90_us"], latency["p99_us"], latency["p99_9_us"], latency["p99_99_us"], latency["max_us"],
    );
    let e2e = &summary["end_to_end_latency"];
    if !e2e.is_null() {
        text.push_str(&format!(
            "\nend-to-end latency: p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us",
            e2e["p50_us"], e2e["p90_us"], e2e["p99_us"], e2e["p99_9_us"], e2e["max_us"]
        ));
    }
    let lag = &summary["send_lag"];
    if !lag.is_null() {
        text.push_str(&format!(
            "\nsend lag: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
            lag["p50_us"], lag["p99_us"], lag["p99_9_us"], lag["max_us"]
        ));
    }
    text
}

/// The percentile distribution in HdrHistogram's text format, one section per histogram.
pub fn percentile_distribution(sections: &[(&str, &Histogram<u64>)]) -> String {
    let mut text = String::new();
    for (name, histogram) in sections
        .iter()
        .filter(|(_, histogram)| !histogram.is_empty())
    {
        text.push_str(&format!("# {name} latency, microseconds\n"));
        text.push_str(&format!(
            "{:>12} {:>14} {:>10} {:>16}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        ));
        let mut total = 0u64;
        for step in histogram.iter_quantiles(2) {
            total += step.count_since_last_iteration();
            let quantile = step.quantile_iterated_to();
            let inverse = if quantile < 1.0 {
                format!("{:.2}", 1.0 / (1.0 - quantile))
            } else {
                "inf".into()
            };
            text.push_str(&format!(
                "{:>12} {:>14.12} {:>10} {:>16}\n",
                step.value_iterated_to(),
                quantile,
                total,
                inverse
            ));
        }
        text.push_str(&format!(
            "#[Mean = {:.2}, StdDeviation = {:.2}]\n#[Max = {}, Total count = {}]\n\n",
            histogram.mean(),
            histogram.stdev(),
            histogram.max(),
            histogram.len()
        ));
    }
    text
}

/// An SVG of latency by percentile, both axes logarithmic (the percentile axis in nines: 90%,
/// 99%, 99.9%, ...), one curve per histogram, so the tail shows at a glance.
pub fn percentile_plot(curves: &[(&str, &Histogram<u64>)]) -> String {
    const WIDTH: f64 = 800.0;
    const HEIGHT: f64 = 480.0;
    const LEFT: f64 = 80.0;
    const BOTTOM: f64 = 60.0;
    const TOP: f64 = 30.0;
    const RIGHT: f64 = 30.0;
    const NINES: f64 = 5.0;
    const LABELS: [&str; 6] = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    let colours = ["#1f77b4", "#d62728", "#2ca02c"];
    let present: Vec<&(&str, &Histogram<u64>)> = curves
        .iter()
        .filter(|(_, histogram)| !histogram.is_empty())
        .collect();
    let max_value = present
        .iter()
        .map(|(_, histogram)| histogram.max())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let min_value = present
        .iter()
        .map(|(_, histogram)| histogram.min())
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let low = min_value.log10().floor();
    let high = max_value.log10().ceil().max(low + 1.0);
    let x = |nines: f64| LEFT + nines / NINES * (WIDTH - LEFT - RIGHT);
    let y = |micros: f64| {
        HEIGHT - BOTTOM - (micros.max(1.0).log10() - low) / (high - low) * (HEIGHT - BOTTOM - TOP)
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (nines, label) in LABELS.iter().enumerate() {
        let position = x(nines as f64);
        svg.push_str(&format!(
            "<line x1=\"{position}\" y1=\"{TOP}\" x2=\"{position}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{position}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 18.0
        ));
    }
    for decade in low as i32..=high as i32 {
        let micros = 10f64.powi(decade);
        let label = if micros >= 1000.0 {
            format!("{} ms", micros / 1000.0)
        } else {
            format!("{micros} us")
        };
        let position = y(micros);
        svg.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{position}\" x2=\"{}\" y2=\"{position}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>\n",
            WIDTH - RIGHT,
            LEFT - 6.0,
            position + 4.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n",
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0
    ));
    for (index, (name, histogram)) in present.iter().enumerate() {
        let colour = colours[index % colours.len()];
        let points: Vec<String> = histogram
            .iter_quantiles(4)
            .map(|step| {
                let quantile = step.quantile_iterated_to().min(1.0 - 10f64.powf(-NINES));
                let nines = -(1.0 - quantile).log10();
                format!(
                    "{:.1},{:.1}",
                    x(nines.clamp(0.0, NINES)),
                    y(step.value_iterated_to() as f64)
                )
            })
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>\n",
            points.join(" "),
            LEFT + 10.0,
            TOP + 16.0 * (index as f64 + 1.0)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}
