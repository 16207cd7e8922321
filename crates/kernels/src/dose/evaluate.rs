//! How a physicist judges a dose: dose–volume figures per ROI, the volume outside a target
//! above a dose level, and the gamma index of one dose against another.
//!
//! # Dose–volume figures
//!
//! An ROI's doses are sampled at the centres of its voxels on a *sampling grid*
//! ([`sample_roi`]): the CT's grid in `ionguide dose`, where the contours lie on slice
//! planes (a coarser dose grid's planes generally miss them), with the dose interpolated
//! trilinearly at each centre. Sampling on the dose grid itself gives its voxel values.
//!
//! - `D_x` ([`dose_at_volume_percent`]): the highest dose `d` that at least `x` % of the
//!   ROI's voxels receive (`V(≥ d) ≥ x %`). With an odd number of voxels, D50 is the median.
//! - `V_y` ([`volume_percent_at_dose`]): percent of the voxels at `≥ y`; V95 is at 95 % of a
//!   reference dose (the prescription).
//! - Homogeneity index ([`homogeneity_index`], ICRU Report 83, 2010, §3.7.1):
//!   `HI = (D2 − D98) / D50`, 0 for a perfectly uniform dose.
//! - Cumulative DVH ([`cumulative_dvh`]): percent of the ROI at `≥` each bin's dose; 100 %
//!   at 0 Gy and never increasing.
//!
//! # Gamma index
//!
//! Low, Harms, Mutic, Purdy, "A technique for the quantitative evaluation of dose
//! distributions", Med. Phys. 25 (1998) 656–661. At each reference point `r` above the
//! low-dose threshold,
//!
//! ```text
//! γ(r) = min over r' of sqrt(|r' − r|² / DTA² + (D_e(r') − D_r(r))² / ΔD²)
//! ```
//!
//! and `r` passes when `γ ≤ 1`. What this implementation chose ([`GammaOptions`]):
//!
//! - **Global** dose criterion: `ΔD` is a percentage of the reference maximum (not of the
//!   local dose).
//! - **Low-dose threshold**: reference voxels below 10 % of the reference maximum are not
//!   evaluated (by default).
//! - **Search**: the evaluated dose is interpolated trilinearly (sub-voxel), on a cubic
//!   lattice of step `DTA / 3` inside a sphere of radius `2 · DTA` around `r`, visited in
//!   order of distance and stopped as soon as the distance term alone exceeds the best
//!   `γ` found (no farther point can do better). The best lattice point is then refined
//!   twice on lattices three times finer (26 neighbours each), so the distance to the true
//!   minimiser is at most `DTA / 54` per axis for a smooth dose: a linear dose gradient's
//!   closed-form γ is met within 0.02 (tests).
//! - γ values above `search radius / DTA` (= 2) mean "at least that": no point beyond the
//!   sphere was looked at. Pass/fail is exact as long as the radius is ≥ DTA.
//! - Points of the search outside the evaluated grid's voxel-centre box are skipped; a
//!   reference voxel with no evaluated point in reach gets γ = ∞ (fails).
//!
//! No maintained Rust crate computes a gamma index (crates.io has none we could find;
//! yagit is C++, pymedphys and npgamma are Python), so it is written here.

use ionguide_core::geometry::Grid;
use ionguide_core::structure::{Roi, RoiMask};
use ionguide_core::volume::{MaskVolume, Volume};
use serde::Serialize;

/// Why a dose could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EvaluateError {
    /// Two volumes that must share a grid do not.
    #[error("{what} is on a {found:?} grid, not on the {expected:?} grid of {of}")]
    GridMismatch {
        /// The volume that does not fit.
        what: &'static str,
        /// Its dims.
        found: [usize; 3],
        /// The volume it must match.
        of: &'static str,
        /// That volume's dims.
        expected: [usize; 3],
    },
    /// A criterion or option out of range.
    #[error("{name} must be finite and > 0, got {value}")]
    BadParameter {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// The reference dose has no positive voxel, so a global criterion is meaningless.
    #[error("the reference dose has no voxel above 0 Gy: no global dose criterion")]
    EmptyReference,
}

fn positive(name: &'static str, value: f64) -> Result<f64, EvaluateError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(EvaluateError::BadParameter { name, value })
    }
}

/// Trilinear interpolation on a volume's raw `(k, j, i)` storage, inside the voxel-centre
/// box `[0, n − 1]` of every axis only.
struct Trilinear<'a> {
    data: &'a [f32],
    dims: [usize; 3],
    max: [f64; 3],
}

impl<'a> Trilinear<'a> {
    fn new(v: &'a Volume<f32>) -> Self {
        let dims = v.grid().dims();
        Trilinear {
            data: v.as_slice(),
            dims,
            max: [(dims[0] - 1) as f64, (dims[1] - 1) as f64, (dims[2] - 1) as f64],
        }
    }

    #[inline]
    fn sample(&self, q: [f64; 3]) -> Option<f32> {
        // `!(x >= 0)` also rejects NaN.
        if !(q[0] >= 0.0
            && q[1] >= 0.0
            && q[2] >= 0.0
            && q[0] <= self.max[0]
            && q[1] <= self.max[1]
            && q[2] <= self.max[2])
        {
            return None;
        }
        let [nx, ny, _] = self.dims;
        let i0 = (q[0] as usize).min(self.dims[0].saturating_sub(2));
        let j0 = (q[1] as usize).min(self.dims[1].saturating_sub(2));
        let k0 = (q[2] as usize).min(self.dims[2].saturating_sub(2));
        let fx = (q[0] - i0 as f64) as f32;
        let fy = (q[1] - j0 as f64) as f32;
        let fz = (q[2] - k0 as f64) as f32;
        // On an axis of one voxel the second neighbour is the first (its weight is 0).
        let di = usize::from(self.dims[0] > 1);
        let dj = nx * usize::from(self.dims[1] > 1);
        let dk = nx * ny * usize::from(self.dims[2] > 1);
        let b = i0 + nx * (j0 + ny * k0);
        let d = self.data;
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = lerp(d[b], d[b + di], fx);
        let c10 = lerp(d[b + dj], d[b + dj + di], fx);
        let c01 = lerp(d[b + dk], d[b + dk + di], fx);
        let c11 = lerp(d[b + dk + dj], d[b + dk + dj + di], fx);
        Some(lerp(lerp(c00, c10, fy), lerp(c01, c11, fy), fz))
    }
}

/// The affine map from one grid's continuous index to another's: `q = m · ijk + b`.
#[derive(Clone, Copy)]
struct IndexMap {
    m: [[f64; 3]; 3],
    b: [f64; 3],
}

impl IndexMap {
    fn between(from: &Grid, to: &Grid) -> Self {
        let b = to.patient_to_index(&from.index_to_patient([0.0; 3]));
        let mut m = [[0.0; 3]; 3];
        for (a, col) in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
            .iter()
            .enumerate()
        {
            let q = to.patient_to_index(&from.index_to_patient(*col));
            for r in 0..3 {
                m[r][a] = q[r] - b[r];
            }
        }
        IndexMap { m, b }
    }

    #[inline]
    fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let m = &self.m;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + m[0][2] * p[2] + self.b[0],
            m[1][0] * p[0] + m[1][1] * p[1] + m[1][2] * p[2] + self.b[1],
            m[2][0] * p[0] + m[2][1] * p[1] + m[2][2] * p[2] + self.b[2],
        ]
    }
}

/// The dose at every set voxel's centre of `mask`, interpolated trilinearly in `dose`.
/// Centres in the dose grid's outer half voxel (or beyond) take its nearest edge value.
pub fn doses_in_mask(mask: &MaskVolume, dose: &Volume<f32>) -> Vec<f32> {
    let map = IndexMap::between(mask.grid(), dose.grid());
    let tri = Trilinear::new(dose);
    let [nx, ny, _] = mask.grid().dims();
    mask.as_slice()
        .iter()
        .enumerate()
        .filter(|(_, m)| **m != 0)
        .map(|(n, _)| {
            let ijk = [(n % nx) as f64, ((n / nx) % ny) as f64, (n / (nx * ny)) as f64];
            let mut q = map.apply(ijk);
            for (a, x) in q.iter_mut().enumerate() {
                *x = x.clamp(0.0, tri.max[a]);
            }
            tri.sample(q).unwrap_or(0.0)
        })
        .collect()
}

/// An ROI's doses, one per voxel of its mask on the sampling grid, highest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RoiDoses {
    /// ROI Name.
    pub name: String,
    /// Voxels of the mask.
    pub voxels: usize,
    /// Volume of the mask, cm³.
    pub volume_cc: f64,
    /// Dose at each voxel centre, Gy, sorted descending.
    pub doses_desc_gy: Vec<f32>,
}

impl RoiDoses {
    /// The doses of `mask` (see [`doses_in_mask`]), named `name`.
    pub fn from_mask(name: &str, mask: &RoiMask, dose: &Volume<f32>) -> Self {
        let mut doses_desc_gy = doses_in_mask(&mask.mask, dose);
        doses_desc_gy.sort_unstable_by(|a, b| b.total_cmp(a));
        RoiDoses {
            name: name.to_string(),
            voxels: mask.voxels,
            volume_cc: mask.volume_cc,
            doses_desc_gy,
        }
    }

    /// Dose–volume figures, V95 relative to `reference_gy`; `None` for an empty ROI.
    pub fn stats(&self, reference_gy: Option<f64>) -> Option<DoseStats> {
        dose_stats(&self.doses_desc_gy, reference_gy)
    }
}

/// Rasterizes `roi` on `sample_grid` (voxel centres decide) and samples `dose` there. The
/// mask is handed back for figures that need it again ([`volume_above_outside_cc`]).
pub fn sample_roi(roi: &Roi, sample_grid: &Grid, dose: &Volume<f32>) -> (RoiDoses, RoiMask) {
    let mask = roi.rasterize(sample_grid);
    (RoiDoses::from_mask(&roi.name, &mask, dose), mask)
}

/// The highest dose that at least `percent` % of the voxels receive, Gy (`doses_desc`
/// sorted descending); `None` when empty.
pub fn dose_at_volume_percent(doses_desc: &[f32], percent: f64) -> Option<f64> {
    let n = doses_desc.len();
    if n == 0 {
        return None;
    }
    // The smallest count ≥ percent % of n (with a guard against 98 % of 100 landing on
    // 98.00000000000001); its last voxel's dose.
    let need = ((percent / 100.0 * n as f64) - 1e-9).ceil();
    let idx = (need.max(1.0) as usize).min(n) - 1;
    Some(f64::from(doses_desc[idx]))
}

/// Percent of the voxels at `≥ level_gy` (`doses_desc` sorted descending); 0 when empty.
pub fn volume_percent_at_dose(doses_desc: &[f32], level_gy: f64) -> f64 {
    if doses_desc.is_empty() {
        return 0.0;
    }
    let at_or_above = doses_desc.partition_point(|d| f64::from(*d) >= level_gy);
    100.0 * at_or_above as f64 / doses_desc.len() as f64
}

/// ICRU 83's homogeneity index `(D2 − D98) / D50`; `None` when D50 is not positive.
pub fn homogeneity_index(d2_gy: f64, d98_gy: f64, d50_gy: f64) -> Option<f64> {
    (d50_gy > 0.0).then(|| (d2_gy - d98_gy) / d50_gy)
}

/// An ROI's dose–volume figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DoseStats {
    /// Dose to 98 % of the ROI, Gy.
    pub d98_gy: f64,
    /// Dose to 95 %, Gy.
    pub d95_gy: f64,
    /// Dose to 50 % (the median with an odd voxel count), Gy.
    pub d50_gy: f64,
    /// Dose to 2 % (ICRU 83's near-maximum), Gy.
    pub d2_gy: f64,
    /// Mean dose, Gy.
    pub mean_gy: f64,
    /// Percent of the ROI at ≥ 95 % of the reference dose; `None` without one.
    pub v95_percent: Option<f64>,
    /// `(D2 − D98) / D50`; `None` when D50 is 0.
    pub homogeneity_index: Option<f64>,
}

/// Dose–volume figures of `doses_desc` (sorted descending), V95 relative to
/// `reference_gy`; `None` when empty.
pub fn dose_stats(doses_desc: &[f32], reference_gy: Option<f64>) -> Option<DoseStats> {
    let d = |p| dose_at_volume_percent(doses_desc, p);
    let (d98_gy, d95_gy, d50_gy, d2_gy) = (d(98.0)?, d(95.0)?, d(50.0)?, d(2.0)?);
    let mean_gy = doses_desc.iter().map(|x| f64::from(*x)).sum::<f64>() / doses_desc.len() as f64;
    Some(DoseStats {
        d98_gy,
        d95_gy,
        d50_gy,
        d2_gy,
        mean_gy,
        v95_percent: reference_gy.map(|r| volume_percent_at_dose(doses_desc, 0.95 * r)),
        homogeneity_index: homogeneity_index(d2_gy, d98_gy, d50_gy),
    })
}

/// A cumulative dose–volume histogram: `volume_percent[i]` of the ROI gets `≥ i · bin_gy`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dvh {
    /// Bin width, Gy; bin `i` starts at `i · bin_gy`.
    pub bin_gy: f64,
    /// Percent of the ROI at or above each bin's dose.
    pub volume_percent: Vec<f64>,
}

impl Dvh {
    /// `(dose Gy, volume %)` of every bin.
    pub fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.volume_percent
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 * self.bin_gy, *v))
    }
}

/// The cumulative DVH of `doses_desc` (sorted descending) in `bins` bins of `bin_gy`.
pub fn cumulative_dvh(doses_desc: &[f32], bin_gy: f64, bins: usize) -> Result<Dvh, EvaluateError> {
    let bin_gy = positive("DVH bin width (Gy)", bin_gy)?;
    Ok(Dvh {
        bin_gy,
        volume_percent: (0..bins)
            .map(|i| volume_percent_at_dose(doses_desc, i as f64 * bin_gy))
            .collect(),
    })
}

/// Volume, cm³, of the voxels of `target`'s grid that are outside `target`, inside `body`
/// (every voxel of the grid without one), and get `≥ level_gy` (dose interpolated at their
/// centres as in [`doses_in_mask`]). `v50_outside_cc` is this at 50 % of the prescription.
pub fn volume_above_outside_cc(
    dose: &Volume<f32>,
    target: &MaskVolume,
    body: Option<&MaskVolume>,
    level_gy: f64,
) -> Result<f64, EvaluateError> {
    if let Some(b) = body {
        if b.grid() != target.grid() {
            return Err(EvaluateError::GridMismatch {
                what: "body mask",
                found: b.grid().dims(),
                of: "target mask",
                expected: target.grid().dims(),
            });
        }
    }
    let mut outside = MaskVolume::filled(target.grid().clone(), 0);
    for (n, o) in outside.as_slice_mut().iter_mut().enumerate() {
        let in_body = body.is_none_or(|b| b.as_slice()[n] != 0);
        *o = u8::from(in_body && target.as_slice()[n] == 0);
    }
    let above = doses_in_mask(&outside, dose)
        .iter()
        .filter(|d| f64::from(**d) >= level_gy)
        .count();
    Ok(above as f64 * target.grid().voxel_volume_mm3() / 1000.0)
}

/// Gamma criteria and search; see the module documentation for what they mean.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GammaOptions {
    /// Dose difference criterion, % of the reference maximum (global).
    pub dose_percent: f64,
    /// Distance-to-agreement criterion, mm.
    pub dta_mm: f64,
    /// Reference voxels below this % of the reference maximum are not evaluated (10).
    pub low_dose_threshold_percent: f64,
    /// Search radius in units of DTA (2).
    pub search_radius_dta: f64,
    /// Lattice step of the search in units of DTA (1/3).
    pub step_dta: f64,
    /// Threads the reference slices are split over, the calling one included (1).
    pub threads: usize,
}

impl GammaOptions {
    /// `dose_percent` % (global) / `dta_mm` mm with the defaults above.
    pub fn new(dose_percent: f64, dta_mm: f64) -> Self {
        GammaOptions {
            dose_percent,
            dta_mm,
            low_dose_threshold_percent: 10.0,
            search_radius_dta: 2.0,
            step_dta: 1.0 / 3.0,
            threads: 1,
        }
    }
    /// Sets the low-dose threshold, % of the reference maximum (0: every voxel).
    pub fn with_low_dose_threshold_percent(mut self, percent: f64) -> Self {
        self.low_dose_threshold_percent = percent;
        self
    }
    /// Sets the search radius in units of DTA.
    pub fn with_search_radius_dta(mut self, r: f64) -> Self {
        self.search_radius_dta = r;
        self
    }
    /// Sets how many threads share the work.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
}

/// A gamma evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct GammaResult {
    /// Percent of the evaluated reference voxels with γ ≤ 1.
    pub pass_rate_percent: f64,
    /// Reference voxels at or above the low-dose threshold.
    pub evaluated_voxels: usize,
    /// Of those, how many pass.
    pub passed_voxels: usize,
    /// Mean γ over the evaluated voxels with a finite γ.
    pub mean_gamma: f64,
    /// Largest γ (∞ when a voxel had no evaluated point in reach).
    pub max_gamma: f64,
    /// `ΔD`, Gy.
    pub dose_criterion_gy: f64,
    /// The low-dose threshold, Gy.
    pub threshold_gy: f64,
    /// γ on the reference grid; NaN where not evaluated.
    pub gamma: Volume<f32>,
}

/// One lattice point of the search: its offset in the evaluated grid's index space and
/// its squared distance over DTA².
#[derive(Clone, Copy)]
struct Offset {
    q: [f64; 3],
    r2: f64,
}

/// The search of one evaluation, shared by every reference voxel.
struct Search<'a> {
    eval: Trilinear<'a>,
    map: IndexMap,
    /// Linear part of the reference → evaluated index map applied to patient mm: mm → q.
    mm_to_q: [[f64; 3]; 3],
    lattice: Vec<Offset>,
    /// Each lattice point's offset in patient mm (the refinement works in mm).
    lattice_mm_of: Vec<[f64; 3]>,
    step_mm: f64,
    dta_mm: f64,
    inv_dd: f64,
}

impl Search<'_> {
    /// Squared Γ at the offset `o_mm` (patient mm) from the reference voxel at `q0`.
    #[inline]
    fn gamma2_at(&self, q0: [f64; 3], o_mm: [f64; 3], d_ref: f32) -> Option<f64> {
        let m = &self.mm_to_q;
        let q = [
            q0[0] + m[0][0] * o_mm[0] + m[0][1] * o_mm[1] + m[0][2] * o_mm[2],
            q0[1] + m[1][0] * o_mm[0] + m[1][1] * o_mm[1] + m[1][2] * o_mm[2],
            q0[2] + m[2][0] * o_mm[0] + m[2][1] * o_mm[1] + m[2][2] * o_mm[2],
        ];
        let de = self.eval.sample(q)?;
        let dd = f64::from(de - d_ref) * self.inv_dd;
        let r2 = (o_mm[0] * o_mm[0] + o_mm[1] * o_mm[1] + o_mm[2] * o_mm[2]) / (self.dta_mm * self.dta_mm);
        Some(r2 + dd * dd)
    }

    /// γ at reference index `ijk` with dose `d_ref`.
    fn gamma(&self, ijk: [f64; 3], d_ref: f32) -> f64 {
        let q0 = self.map.apply(ijk);
        let mut best2 = f64::INFINITY;
        let mut best_q = None;
        for (n, o) in self.lattice.iter().enumerate() {
            if o.r2 >= best2 {
                break;
            }
            let q = [q0[0] + o.q[0], q0[1] + o.q[1], q0[2] + o.q[2]];
            if let Some(de) = self.eval.sample(q) {
                let dd = f64::from(de - d_ref) * self.inv_dd;
                let g2 = o.r2 + dd * dd;
                if g2 < best2 {
                    best2 = g2;
                    best_q = Some(n);
                }
            }
        }
        let Some(n) = best_q else {
            return f64::INFINITY;
        };
        if best2 == 0.0 {
            return 0.0;
        }
        // The lattice point's offset in mm, refined on two lattices 3× and 9× finer.
        let mut centre = self.lattice_mm(n);
        let mut h = self.step_mm;
        for _ in 0..2 {
            h /= 3.0;
            let c = centre;
            for dz in -1..=1 {
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        if dx == 0 && dy == 0 && dz == 0 {
                            continue;
                        }
                        let o = [
                            c[0] + f64::from(dx) * h,
                            c[1] + f64::from(dy) * h,
                            c[2] + f64::from(dz) * h,
                        ];
                        if let Some(g2) = self.gamma2_at(q0, o, d_ref) {
                            if g2 < best2 {
                                best2 = g2;
                                centre = o;
                            }
                        }
                    }
                }
            }
        }
        best2.sqrt()
    }

    /// The mm offset of lattice point `n` (kept beside `q` for the refinement).
    fn lattice_mm(&self, n: usize) -> [f64; 3] {
        self.lattice_mm_of[n]
    }
}

/// γ of every reference voxel at or above the low-dose threshold, against `evaluated`
/// (any grid in the same patient space; interpolated trilinearly).
pub fn gamma_index(
    reference: &Volume<f32>,
    evaluated: &Volume<f32>,
    options: &GammaOptions,
) -> Result<GammaResult, EvaluateError> {
    let dose_percent = positive("gamma dose criterion (%)", options.dose_percent)?;
    let dta_mm = positive("gamma distance to agreement (mm)", options.dta_mm)?;
    let radius = positive("gamma search radius (× DTA)", options.search_radius_dta)?;
    let step = positive("gamma search step (× DTA)", options.step_dta)?;
    let threshold_percent = options.low_dose_threshold_percent;
    if !(threshold_percent.is_finite() && threshold_percent >= 0.0) {
        return Err(EvaluateError::BadParameter {
            name: "gamma low-dose threshold (%)",
            value: threshold_percent,
        });
    }
    let ref_max = reference.as_slice().iter().copied().fold(0.0f32, f32::max);
    if ref_max <= 0.0 || !ref_max.is_finite() {
        return Err(EvaluateError::EmptyReference);
    }
    let dose_criterion_gy = dose_percent / 100.0 * f64::from(ref_max);
    let threshold_gy = threshold_percent / 100.0 * f64::from(ref_max);

    let rg = reference.grid();
    let eg = evaluated.grid();
    let map = IndexMap::between(rg, eg);
    // mm → evaluated index: the evaluated grid's own linear map (the reference's index map
    // above already carries the positions).
    let p2i = eg.patient_to_index_matrix();
    let mut mm_to_q = [[0.0; 3]; 3];
    for (r, row) in mm_to_q.iter_mut().enumerate() {
        for (c, x) in row.iter_mut().enumerate() {
            *x = p2i[(r, c)];
        }
    }
    let step_mm = step * dta_mm;
    let n = (radius / step).floor() as i32;
    let mut lattice: Vec<(Offset, [f64; 3])> = Vec::new();
    for k in -n..=n {
        for j in -n..=n {
            for i in -n..=n {
                let o = [
                    f64::from(i) * step_mm,
                    f64::from(j) * step_mm,
                    f64::from(k) * step_mm,
                ];
                let r2 = (o[0] * o[0] + o[1] * o[1] + o[2] * o[2]) / (dta_mm * dta_mm);
                if r2 > radius * radius * (1.0 + 1e-12) {
                    continue;
                }
                let q = [
                    mm_to_q[0][0] * o[0] + mm_to_q[0][1] * o[1] + mm_to_q[0][2] * o[2],
                    mm_to_q[1][0] * o[0] + mm_to_q[1][1] * o[1] + mm_to_q[1][2] * o[2],
                    mm_to_q[2][0] * o[0] + mm_to_q[2][1] * o[1] + mm_to_q[2][2] * o[2],
                ];
                lattice.push((Offset { q, r2 }, o));
            }
        }
    }
    lattice.sort_by(|a, b| a.0.r2.total_cmp(&b.0.r2));
    let search = Search {
        eval: Trilinear::new(evaluated),
        map,
        mm_to_q,
        lattice_mm_of: lattice.iter().map(|l| l.1).collect(),
        lattice: lattice.iter().map(|l| l.0).collect(),
        step_mm,
        dta_mm,
        inv_dd: 1.0 / dose_criterion_gy,
    };

    let [nx, ny, nz] = rg.dims();
    let mut gamma = Volume::<f32>::filled(rg.clone(), f32::NAN);
    let slab = nx * ny;
    let refs = reference.as_slice();
    let run = |k0: usize, out: &mut [f32]| {
        for (n, g) in out.iter_mut().enumerate() {
            let idx = k0 * slab + n;
            let d = refs[idx];
            if f64::from(d) < threshold_gy {
                continue;
            }
            let ijk = [(idx % nx) as f64, ((idx / nx) % ny) as f64, (idx / slab) as f64];
            *g = search.gamma(ijk, d) as f32;
        }
    };
    let threads = options.threads.clamp(1, nz.max(1));
    let data = gamma.as_slice_mut();
    if threads == 1 {
        run(0, data);
    } else {
        // Interleaved slabs of a few slices each, so a dose concentrated in the middle of
        // the grid is shared evenly.
        let per = 2usize;
        let chunks: Vec<(usize, &mut [f32])> = data
            .chunks_mut(per * slab)
            .enumerate()
            .map(|(c, s)| (c * per, s))
            .collect();
        let mut lanes: Vec<Vec<(usize, &mut [f32])>> = (0..threads).map(|_| Vec::new()).collect();
        for (c, chunk) in chunks.into_iter().enumerate() {
            lanes[c % threads].push(chunk);
        }
        std::thread::scope(|scope| {
            let run = &run;
            let mut lanes = lanes.into_iter();
            let mine = lanes.next().unwrap_or_default();
            for lane in lanes {
                scope.spawn(move || {
                    for (k0, s) in lane {
                        run(k0, s);
                    }
                });
            }
            for (k0, s) in mine {
                run(k0, s);
            }
        });
    }

    let mut evaluated_voxels = 0usize;
    let mut passed_voxels = 0usize;
    let mut sum = 0.0f64;
    let mut finite = 0usize;
    let mut max_gamma = 0.0f64;
    for g in gamma.as_slice().iter().filter(|g| !g.is_nan()) {
        evaluated_voxels += 1;
        let g = f64::from(*g);
        if g <= 1.0 {
            passed_voxels += 1;
        }
        if g.is_finite() {
            sum += g;
            finite += 1;
        }
        max_gamma = max_gamma.max(g);
    }
    Ok(GammaResult {
        pass_rate_percent: if evaluated_voxels == 0 {
            100.0
        } else {
            100.0 * passed_voxels as f64 / evaluated_voxels as f64
        },
        evaluated_voxels,
        passed_voxels,
        mean_gamma: if finite == 0 { 0.0 } else { sum / finite as f64 },
        max_gamma,
        dose_criterion_gy,
        threshold_gy,
        gamma,
    })
}
