//! Error and latency accumulators (HDR histograms) and their quantiles.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Quantiles of an error or a latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile (absent for latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    /// 99th percentile (latency only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// Largest.
    pub max: f64,
}

/// Error accumulator in µm (HDR histogram: exact counts, 3 significant digits).
#[derive(Debug, Clone)]
pub struct ErrorHistogram(Histogram<u64>);

impl Default for ErrorHistogram {
    fn default() -> Self {
        ErrorHistogram(Histogram::new_with_bounds(1, 10_000_000, 3).expect("constant bounds"))
    }
}

impl ErrorHistogram {
    /// Records an error, mm.
    pub fn record_mm(&mut self, mm: f64) {
        if mm.is_finite() {
            self.0
                .saturating_record(((mm.abs() * 1000.0).round() as u64).max(1));
        }
    }
    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// p50 / p95 / max in mm (zeros when empty).
    pub fn errors(&self) -> Quantiles {
        let q = |p: f64| {
            if self.0.is_empty() {
                0.0
            } else {
                self.0.value_at_quantile(p) as f64 / 1000.0
            }
        };
        Quantiles {
            p50: q(0.5),
            p95: Some(q(0.95)),
            p99: None,
            max: if self.0.is_empty() {
                0.0
            } else {
                self.0.max() as f64 / 1000.0
            },
        }
    }
    /// p50 / p99 / max (for latencies recorded in µs as "mm" × 1000 = ms).
    pub fn latencies(&self) -> Quantiles {
        let e = self.errors();
        Quantiles {
            p50: e.p50,
            p95: None,
            p99: Some(if self.0.is_empty() {
                0.0
            } else {
                self.0.value_at_quantile(0.99) as f64 / 1000.0
            }),
            max: e.max,
        }
    }
}
