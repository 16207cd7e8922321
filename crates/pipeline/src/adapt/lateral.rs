//! The lateral correction of a divergent beam (the formula of the module docs).

/// `Δ_iso = (s_l·SAD + x·s_z) / (SAD − d − s_z)`; parallel beam: `s_l`. Infinite where the
/// shifted target is at or above the virtual source.
pub(super) fn lateral_mm(s_l: f64, s_z: f64, x: f64, d: f64, sad: f64) -> f64 {
    if !sad.is_finite() {
        return s_l;
    }
    let den = sad - d - s_z;
    if den > 0.0 {
        (s_l * sad + x * s_z) / den
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateral_formula_reduces_to_magnification_and_parallel() {
        // s_z = 0: s·SAD/(SAD − d).
        assert!((lateral_mm(2.0, 0.0, 40.0, 100.0, 7000.0) - 2.0 * 7000.0 / 6900.0).abs() < 1e-12);
        assert_eq!(lateral_mm(2.0, 5.0, 40.0, 100.0, f64::INFINITY), 2.0);
        assert_eq!(lateral_mm(2.0, 0.0, 40.0, 7000.0, 7000.0), f64::INFINITY);
    }
}
