//! CSDA range in water ↔ kinetic energy per nucleon for 1H, 4He, 12C, 16O, 20Ne.
//!
//! Model: the Bethe formula for electronic stopping (PDG, "Passage of particles through
//! matter", eq. 34.5) in liquid water, `Z/A = 0.555087`, mean excitation energy
//! `I = 75 eV` (the ICRU 49 / NIST PSTAR value), with the exact maximum energy transfer
//! `T_max`. The density-effect correction is zero here: Sternheimer's water parameters put
//! its onset at `X₀ = 0.24` (βγ ≈ 1.74, ≈ 950 MeV/u), above every clinical energy. Shell and
//! Barkas corrections are omitted; they matter only below a few MeV/u, where the range is
//! taken from PSTAR instead: the integral starts at 1 MeV/u with the PSTAR CSDA range of a
//! 1 MeV proton, 2.458·10⁻³ g/cm² (ICRU 49), scaled like the rest.
//!
//! Stopping power per nucleon depends only on velocity and `z²`, so an ion's range is
//! `R(T/A) = (A/z²) · ∫ dT_u / S₁(T_u)` with `S₁` the stopping power of a unit charge with
//! the ion's mass per nucleon. The integral is evaluated once at startup (Simpson's rule on
//! a log-energy grid) into a table that is interpolated log-log both ways.
//!
//! Agreement with libamtrack 0.14 (PSTAR-based) in `tests/data/physics`: within 0.3 % for
//! every ion at 50–500 MeV/u.

use super::RangeError;
use crate::units::{Ion, MmWe};

/// Electron rest energy, MeV.
const ME_MEV: f64 = 0.510_998_95;
/// Atomic mass unit, MeV.
const U_MEV: f64 = 931.494_102;
/// Proton mass, MeV.
const MP_MEV: f64 = 938.272_088;
/// `4π N_A r_e² m_e c²`, MeV cm²/mol.
const K_MEV_CM2_MOL: f64 = 0.307_075;
/// Water electrons per nucleon mass (Z/A), mol/g.
const WATER_Z_OVER_A: f64 = 0.555_087;
/// Water mean excitation energy, MeV.
const WATER_I_MEV: f64 = 75.0e-6;
/// Lowest tabulated energy per nucleon, MeV/u, and the PSTAR proton CSDA range there, g/cm².
const E_LOW_MEV_U: f64 = 1.0;
const PSTAR_R_1MEV_G_CM2: f64 = 2.458e-3;
/// Highest tabulated energy per nucleon, MeV/u.
pub const E_HIGH_MEV_U: f64 = 1000.0;
/// Table nodes per decade of energy.
const NODES_PER_DECADE: usize = 200;

/// Bethe mass stopping power of a unit charge with mass `m_mev` per nucleon at kinetic
/// energy `t_mev` per nucleon, MeV cm²/g (per unit charge², per nucleon).
fn bethe_unit_charge(t_mev: f64, m_mev: f64) -> f64 {
    let gamma = 1.0 + t_mev / m_mev;
    let beta2 = 1.0 - 1.0 / (gamma * gamma);
    let bg2 = beta2 * gamma * gamma;
    let r = ME_MEV / m_mev;
    let t_max = 2.0 * ME_MEV * bg2 / (1.0 + 2.0 * gamma * r + r * r);
    K_MEV_CM2_MOL * WATER_Z_OVER_A / beta2
        * (0.5 * (2.0 * ME_MEV * bg2 * t_max / (WATER_I_MEV * WATER_I_MEV)).ln() - beta2)
}

/// A range ↔ energy table for one ion in water.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeEnergyTable {
    ion: Ion,
    ln_e: Vec<f64>,
    ln_r: Vec<f64>,
}

impl RangeEnergyTable {
    /// Integrates the model for `ion` (microseconds; do it once at startup).
    pub fn new(ion: Ion) -> Result<Self, RangeError> {
        if !ion.is_supported() {
            return Err(RangeError::UnsupportedIon { ion });
        }
        let m_per_u = if ion == Ion::PROTON { MP_MEV } else { U_MEV };
        let scale_mm = ion.a as f64 / (ion.z as f64 * ion.z as f64) * 10.0; // g/cm² → mm water
        let decades = (E_HIGH_MEV_U / E_LOW_MEV_U).log10();
        let n = (decades * NODES_PER_DECADE as f64).ceil() as usize;
        let (a, b) = (E_LOW_MEV_U.ln(), E_HIGH_MEV_U.ln());
        let h = (b - a) / n as f64;
        // d(range)/d(ln T) = T / S(T), g/cm² per unit charge per nucleon.
        let f = |x: f64| {
            let t = x.exp();
            t / bethe_unit_charge(t, m_per_u)
        };
        let mut r = PSTAR_R_1MEV_G_CM2 * m_per_u / MP_MEV;
        let mut ln_e = Vec::with_capacity(n + 1);
        let mut ln_r = Vec::with_capacity(n + 1);
        ln_e.push(a);
        ln_r.push((r * scale_mm).ln());
        for i in 0..n {
            let x0 = a + i as f64 * h;
            r += h / 6.0 * (f(x0) + 4.0 * f(x0 + 0.5 * h) + f(x0 + h));
            ln_e.push(x0 + h);
            ln_r.push((r * scale_mm).ln());
        }
        Ok(RangeEnergyTable { ion, ln_e, ln_r })
    }

    /// The ion.
    pub fn ion(&self) -> Ion {
        self.ion
    }
    /// Tabulated energy span, MeV/u.
    pub fn energy_span_mev_u(&self) -> (f64, f64) {
        (E_LOW_MEV_U, E_HIGH_MEV_U)
    }
    /// Tabulated range span, mm water.
    pub fn range_span_mm(&self) -> (MmWe, MmWe) {
        (
            MmWe(self.ln_r[0].exp()),
            MmWe(self.ln_r[self.ln_r.len() - 1].exp()),
        )
    }

    /// CSDA range in water at `energy_mev_u`.
    pub fn range_mm(&self, energy_mev_u: f64) -> Result<MmWe, RangeError> {
        let (lo, hi) = self.energy_span_mev_u();
        if !(energy_mev_u >= lo && energy_mev_u <= hi) {
            return Err(RangeError::EnergyOutOfTable {
                what: format!("{} CSDA range", self.ion),
                energy_mev_u,
                min_mev_u: lo,
                max_mev_u: hi,
            });
        }
        Ok(MmWe(interp(&self.ln_e, &self.ln_r, energy_mev_u.ln()).exp()))
    }

    /// Energy per nucleon, MeV/u, whose CSDA range in water is `range`.
    pub fn energy_mev_u(&self, range: MmWe) -> Result<f64, RangeError> {
        let (MmWe(lo), MmWe(hi)) = self.range_span_mm();
        let range_mm = range.get();
        if !(range_mm >= lo && range_mm <= hi) {
            return Err(RangeError::DepthOutOfTable {
                what: format!("{} CSDA range", self.ion),
                depth_mm: range_mm,
                min_mm: lo,
                max_mm: hi,
            });
        }
        Ok(interp(&self.ln_r, &self.ln_e, range_mm.ln()).exp())
    }
}

/// Linear interpolation of `y(x)` on strictly increasing `xs`, `x` inside the span.
pub(crate) fn interp(xs: &[f64], ys: &[f64], x: f64) -> f64 {
    let k = xs.partition_point(|&v| v < x).clamp(1, xs.len() - 1);
    let (x0, x1) = (xs[k - 1], xs[k]);
    ys[k - 1] + (ys[k] - ys[k - 1]) * (x - x0) / (x1 - x0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proton_range_matches_pstar_within_one_percent() {
        // NIST PSTAR CSDA ranges in liquid water, g/cm²: 100 MeV 7.718, 200 MeV 25.96.
        let t = RangeEnergyTable::new(Ion::PROTON).unwrap();
        for (e, r_g_cm2) in [(100.0, 7.718), (200.0, 25.96)] {
            let r = t.range_mm(e).unwrap().get();
            assert!((r / (r_g_cm2 * 10.0) - 1.0).abs() < 0.01, "{e} MeV: {r} mm");
        }
        assert!(t.range_mm(0.5).is_err());
        assert!(t.energy_mev_u(MmWe(1e6)).is_err());
        assert!(RangeEnergyTable::new(Ion { z: 3, a: 7 }).is_err());
    }
}
