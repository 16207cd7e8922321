//! A delivery's dose as a physicist reads it: target D98, D95, D50, D2, V95, the ICRU 83
//! homogeneity index, the volume outside the target above half the prescription, and the
//! gamma pass rates against the static (no motion) dose — all through the kernel's
//! `dose::evaluate`, the same code `ionguide dose` uses.

use ionguide::dose::evaluate::{
    cumulative_dvh, gamma_index, sample_roi, volume_above_outside_cc, Dvh, GammaOptions,
};
use ionguide::geometry::Grid;
use ionguide::structure::{Roi, RoiMask};
use ionguide::volume::Volume;
use serde::Serialize;

/// `report.json`'s figures of one delivery's dose.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoseFigures {
    /// Target dose received by 98 % of its volume, Gy.
    pub d98_gy: f64,
    /// … by 95 %, Gy.
    pub d95_gy: f64,
    /// … by 50 % (median), Gy.
    pub d50_gy: f64,
    /// … by 2 % (near maximum), Gy.
    pub d2_gy: f64,
    /// Target volume receiving ≥ 95 % of the prescription, %.
    pub v95_pct: f64,
    /// (D2 − D98) / D50.
    pub homogeneity_index: f64,
    /// Volume outside the target (inside the body) above 50 % of the prescription, cm³.
    pub v50_outside_cc: f64,
    /// Gamma pass rate against the static dose, 3 % (global) / 3 mm, % (absent for the
    /// static dose itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma_3pct_3mm_pct: Option<f64>,
    /// … 2 % / 2 mm, %.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma_2pct_2mm_pct: Option<f64>,
    /// Beam-on time over treatment time (the gated delivery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duty_cycle: Option<f64>,
}

/// The target and body the figures are taken over, rasterized once on the dose grid.
#[derive(Debug, Clone)]
pub struct DoseRegions {
    /// Where the ROIs are rasterized and the dose sampled: the planning CT's grid, whose
    /// slices the contours lie on.
    sample_grid: Grid,
    target: Roi,
    target_mask: RoiMask,
    body_mask: Option<RoiMask>,
}

/// Why the figures could not be taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("dose figures: {0}")]
pub struct FiguresError(pub String);

impl DoseRegions {
    /// `target` (and `body`, when the structure set has one) on `grid` (the planning CT's:
    /// contours lie on its slices; the dose is interpolated there).
    pub fn new(target: &Roi, body: Option<&Roi>, grid: &Grid) -> Result<Self, FiguresError> {
        let target_mask = target.rasterize(grid);
        if target_mask.voxels == 0 {
            return Err(FiguresError(format!(
                "target ROI {:?} covers no voxel of the planning CT",
                target.name
            )));
        }
        Ok(DoseRegions {
            sample_grid: grid.clone(),
            target: target.clone(),
            target_mask,
            body_mask: body.map(|b| b.rasterize(grid)),
        })
    }

    /// The target ROI's name.
    pub fn target_name(&self) -> &str {
        &self.target.name
    }

    /// The target's centroid on the dose grid, mm.
    pub fn target_centroid_mm(&self) -> Option<ionguide::units::PointMm> {
        self.target_mask.centroid_mm
    }

    /// The target's median dose, Gy (the static dose's is the replay's prescription).
    pub fn target_d50_gy(&self, dose: &Volume<f32>) -> Option<f64> {
        sample_roi(&self.target, &self.sample_grid, dose)
            .0
            .stats(None)
            .map(|s| s.d50_gy)
    }

    /// The figures of `dose` for `prescription_gy`, gamma against `reference` when given.
    pub fn figures(
        &self,
        dose: &Volume<f32>,
        reference: Option<&Volume<f32>>,
        prescription_gy: f64,
    ) -> Result<DoseFigures, FiguresError> {
        let (doses, _) = sample_roi(&self.target, &self.sample_grid, dose);
        let s = doses
            .stats(Some(prescription_gy))
            .ok_or_else(|| FiguresError("empty target".into()))?;
        let v50 = volume_above_outside_cc(
            dose,
            &self.target_mask.mask,
            self.body_mask.as_ref().map(|b| &b.mask),
            0.5 * prescription_gy,
        )
        .map_err(|e| FiguresError(e.to_string()))?;
        let gamma = |percent: f64, dta_mm: f64| -> Result<Option<f64>, FiguresError> {
            let Some(reference) = reference else {
                return Ok(None);
            };
            let g = gamma_index(
                reference,
                dose,
                &GammaOptions::new(percent, dta_mm).with_threads(2),
            )
            .map_err(|e| FiguresError(e.to_string()))?;
            Ok(Some(g.pass_rate_percent))
        };
        Ok(DoseFigures {
            d98_gy: s.d98_gy,
            d95_gy: s.d95_gy,
            d50_gy: s.d50_gy,
            d2_gy: s.d2_gy,
            v95_pct: s.v95_percent.unwrap_or(f64::NAN),
            homogeneity_index: s.homogeneity_index.unwrap_or(f64::NAN),
            v50_outside_cc: v50,
            gamma_3pct_3mm_pct: gamma(3.0, 3.0)?,
            gamma_2pct_2mm_pct: gamma(2.0, 2.0)?,
            duty_cycle: None,
        })
    }

    /// The target's cumulative DVH of `dose` (bins of 1 % of the prescription up to 130 %).
    pub fn target_dvh(&self, dose: &Volume<f32>, prescription_gy: f64) -> Result<Dvh, FiguresError> {
        let (doses, _) = sample_roi(&self.target, &self.sample_grid, dose);
        cumulative_dvh(&doses.doses_desc_gy, 0.01 * prescription_gy, 131)
            .map_err(|e| FiguresError(e.to_string()))
    }
}

/// A dose accumulated in f64 on `grid` as the f32 volume the evaluation reads.
pub fn as_volume(grid: &Grid, dose_gy: &[f64]) -> Result<Volume<f32>, FiguresError> {
    ionguide::dose::dose_volume(grid, dose_gy).map_err(|e| FiguresError(e.to_string()))
}
