//! Small SVG charts drawn on the server: a two-line sparkline (events/s
//! and lag over the last minutes) and horizontal bars (the languages side
//! by side). Only numbers and escaped labels go into them.

use std::fmt::Write as _;

/// Width of a sparkline, in SVG user units (px).
const SPARK_W: f64 = 240.0;
/// Height of a sparkline.
const SPARK_H: f64 = 48.0;

/// The points of one line over `values`, scaled so that `max` is the top.
fn polyline(values: &[f64], max: f64) -> String {
    let n = values.len();
    let step = if n > 1 { SPARK_W / (n - 1) as f64 } else { 0.0 };
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        let y = if max > 0.0 {
            SPARK_H - 2.0 - (v / max) * (SPARK_H - 4.0)
        } else {
            SPARK_H - 2.0
        };
        let _ = write!(out, "{:.1},{:.1} ", i as f64 * step, y);
    }
    out.trim_end().to_owned()
}

/// A sparkline of events/s (solid) and lag (dashed), each scaled to its
/// own maximum, oldest on the left; `seconds` is the span it covers.
pub fn sparkline(events_per_s: &[f64], lag: &[f64], seconds: u64) -> String {
    let max_rate = events_per_s.iter().copied().fold(0.0, f64::max);
    let max_lag = lag.iter().copied().fold(0.0, f64::max);
    format!(
        concat!(
            r#"<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" "#,
            r#"aria-label="events per second (solid, peak {peak_rate:.0}) and lag (dashed, peak {peak_lag:.0}) over the last {seconds} s">"#,
            r#"<rect x="0" y="0" width="{w}" height="{h}" class="spark-bg"/>"#,
            r#"<polyline class="spark-rate" points="{rate}"/>"#,
            r#"<polyline class="spark-lag" points="{lag}"/></svg>"#
        ),
        w = SPARK_W,
        h = SPARK_H,
        peak_rate = max_rate,
        peak_lag = max_lag,
        seconds = seconds,
        rate = polyline(events_per_s, max_rate),
        lag = polyline(lag, max_lag),
    )
}

/// Escapes text for an SVG text node or attribute.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Horizontal bars, one per `(label, value, value as text)`, scaled to the
/// largest value; titled `title`.
pub fn bars(title: &str, rows: &[(String, f64, String)]) -> String {
    let label_w = 80.0;
    let bar_w = 260.0;
    let row_h = 22.0;
    let h = 26.0 + row_h * rows.len() as f64;
    let w = label_w + bar_w + 110.0;
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max);
    let mut out = format!(
        r#"<svg class="bars" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><text x="0" y="14" class="bars-title">{t}</text>"#,
        t = escape(title)
    );
    for (i, (label, value, text)) in rows.iter().enumerate() {
        let y = 22.0 + row_h * i as f64;
        let len = if max > 0.0 { value / max * bar_w } else { 0.0 };
        let _ = write!(
            out,
            r#"<text x="0" y="{ty}" class="bars-label">{l}</text><rect x="{label_w}" y="{y}" width="{len:.1}" height="16" class="bar"/><text x="{tx:.1}" y="{ty}" class="bars-value">{v}</text>"#,
            ty = y + 12.0,
            l = escape(label),
            tx = label_w + len + 6.0,
            v = escape(text),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_scaled_to_their_peak() {
        assert_eq!(
            polyline(&[0.0, 10.0, 5.0], 10.0),
            "0.0,46.0 120.0,2.0 240.0,24.0"
        );
        assert_eq!(polyline(&[0.0, 0.0], 0.0), "0.0,46.0 240.0,46.0");
        let svg = sparkline(&[1.0, 2.0], &[3.0, 0.0], 300);
        assert!(svg.contains("peak 2)"), "{svg}");
        assert!(svg.contains("over the last 300 s"), "{svg}");
    }

    #[test]
    fn bars_are_scaled_to_the_largest_and_labels_escaped() {
        let svg = bars(
            "a<b",
            &[
                ("rust".into(), 100.0, "100".into()),
                ("c&".into(), 50.0, "50".into()),
            ],
        );
        assert!(svg.contains(r#"width="260.0" height="16""#), "{svg}");
        assert!(svg.contains(r#"width="130.0" height="16""#), "{svg}");
        assert!(svg.contains("a&lt;b") && svg.contains("c&amp;"), "{svg}");
    }
}
