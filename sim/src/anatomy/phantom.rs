//! A deterministic analytic thorax phantom whose moved anatomy is rendered exactly.
//!
//! Everything is defined in patient millimetres (DICOM LPS, the axial plane centred on the
//! origin), independent of the grid, so the same anatomy comes out on any grid: body
//! ellipse with skin, two lungs, ribs as ring segments repeating along z, a vertebra with
//! canal and arch, a mediastinum/heart, and a spherical tumor in the right lung. A smooth,
//! seeded texture (a sum of plane waves) gives registration something to lock onto in
//! tissue and lung.
//!
//! Motion is analytic, not resampled: in [`Phantom::render_moved`] each lung voxel `p` shows
//! the static lung function at `p − w(p)·d`, where `w` is 1 within a shell around the moved
//! tumor and falls smoothly (cos²) to 0 over `lung_falloff_mm`. The tumor is therefore the
//! same sphere moved by exactly `d`, and the lung around it follows without tearing. Bone,
//! soft tissue and the body outline stay put (real ribs and spine barely move with
//! breathing, and the planner's entrance path stays fixed).

use std::f64::consts::PI;

use ionguide::geometry::Grid;
use ionguide::structure::{Contour, Roi, StructureSet};
use ionguide::units::{Hu, PointMm};
use ionguide::volume::CtVolume;

use crate::rng::SplitMix64;
use crate::uid::uid_from_seed;

/// Why a phantom cannot be built or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhantomError {
    /// A specification value is out of range.
    #[error("invalid phantom parameter {name}: {reason}")]
    BadSpec {
        /// Parameter name.
        name: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The grid cannot be built.
    #[error("phantom grid: {0}")]
    Grid(#[from] ionguide::geometry::GeometryError),
    /// The output volume of a render is not the phantom grid or a slab of it.
    #[error("output grid is not the phantom grid or a slab of whole slices of it: {reason}")]
    GridMismatch {
        /// What differs.
        reason: String,
    },
    /// A displacement would fold the deformed lung (or is not finite).
    #[error("displacement {displacement_mm:?} mm is not usable: {reason}")]
    BadDisplacement {
        /// The displacement asked for.
        displacement_mm: [f64; 3],
        /// Why.
        reason: String,
    },
}

/// How to build a phantom.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomSpec {
    /// Voxels along x (columns), y (rows), z (slices).
    pub dims: [usize; 3],
    /// Voxel spacing, mm.
    pub spacing_mm: [f64; 3],
    /// Tumor centre, LPS mm (must lie inside a lung with the tumor fully in it).
    pub tumor_center_mm: [f64; 3],
    /// Tumor (GTV) diameter, mm.
    pub tumor_diameter_mm: f64,
    /// PTV = GTV grown isotropically by this, mm.
    pub ptv_margin_mm: f64,
    /// Standard deviation of the smooth texture in soft tissue, HU (lung gets twice);
    /// 0 disables it.
    pub texture_hu: f64,
    /// Lung around the tumor follows it over this distance, mm; 0 moves the tumor alone.
    pub lung_falloff_mm: f64,
    /// Seed of the texture and of the default UIDs.
    pub seed: u64,
    /// Frame of Reference UID of the phantom's structures (and of frames made from it).
    pub frame_of_reference_uid: String,
}

impl Default for PhantomSpec {
    /// 256×256×48 voxels of 1.5×1.5×2.5 mm (384×384×120 mm), a 30 mm tumor in the right lung.
    fn default() -> Self {
        PhantomSpec {
            dims: [256, 256, 48],
            spacing_mm: [1.5, 1.5, 2.5],
            tumor_center_mm: [-75.0, -10.0, 0.0],
            tumor_diameter_mm: 30.0,
            ptv_margin_mm: 5.0,
            texture_hu: 10.0,
            lung_falloff_mm: 30.0,
            seed: 20_240_601,
            frame_of_reference_uid: uid_from_seed(20_240_601, "frame-of-reference", 0),
        }
    }
}

impl PhantomSpec {
    /// The CI preset: the same anatomy on 128×128×24 voxels of 3×3×5 mm.
    pub fn small() -> Self {
        PhantomSpec {
            dims: [128, 128, 24],
            spacing_mm: [3.0, 3.0, 5.0],
            ..PhantomSpec::default()
        }
    }

    /// The grid: axis-aligned, centred on the patient origin.
    pub fn grid(&self) -> Result<Grid, PhantomError> {
        let origin = PointMm::new(
            -0.5 * (self.dims[0] as f64 - 1.0) * self.spacing_mm[0],
            -0.5 * (self.dims[1] as f64 - 1.0) * self.spacing_mm[1],
            -0.5 * (self.dims[2] as f64 - 1.0) * self.spacing_mm[2],
        );
        Ok(Grid::axis_aligned(self.dims, origin, self.spacing_mm)?)
    }

    fn validate(&self) -> Result<(), PhantomError> {
        let bad = |name, reason: String| Err(PhantomError::BadSpec { name, reason });
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !pos(self.tumor_diameter_mm) {
            return bad(
                "tumor_diameter_mm",
                format!("must be > 0, got {}", self.tumor_diameter_mm),
            );
        }
        for (name, v) in [
            ("ptv_margin_mm", self.ptv_margin_mm),
            ("texture_hu", self.texture_hu),
            ("lung_falloff_mm", self.lung_falloff_mm),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(name, format!("must be finite and ≥ 0, got {v}"));
            }
        }
        if !self.tumor_center_mm.iter().all(|v| v.is_finite()) {
            return bad(
                "tumor_center_mm",
                format!("not finite: {:?}", self.tumor_center_mm),
            );
        }
        let [x, y, _] = self.tumor_center_mm;
        let r = 0.5 * self.tumor_diameter_mm;
        let inside = [RIGHT_LUNG, LEFT_LUNG].iter().any(|l| l.fits_disc(x, y, r));
        if !inside {
            return bad(
                "tumor_center_mm",
                format!(
                    "a {:.1} mm tumor at ({x:.1}, {y:.1}) does not fit inside a lung",
                    self.tumor_diameter_mm
                ),
            );
        }
        if self.frame_of_reference_uid.trim().is_empty() {
            return bad("frame_of_reference_uid", "empty".into());
        }
        Ok(())
    }
}

/// An axis-aligned ellipse in the axial plane.
#[derive(Debug, Clone, Copy)]
struct Ellipse {
    cx: f64,
    cy: f64,
    ax: f64,
    ay: f64,
}

impl Ellipse {
    /// Normalized radius: < 1 inside.
    #[inline]
    fn rho(&self, x: f64, y: f64) -> f64 {
        (((x - self.cx) / self.ax).powi(2) + ((y - self.cy) / self.ay).powi(2)).sqrt()
    }
    #[inline]
    fn contains(&self, x: f64, y: f64) -> bool {
        self.rho(x, y) < 1.0
    }
    /// Whether a disc lies inside, with a 5 mm margin (checked on its rim).
    fn fits_disc(&self, x: f64, y: f64, r: f64) -> bool {
        (0..360).all(|d| {
            let a = (d as f64).to_radians();
            let shrunk = Ellipse {
                ax: self.ax - 5.0,
                ay: self.ay - 5.0,
                ..*self
            };
            shrunk.ax > 0.0 && shrunk.ay > 0.0 && shrunk.contains(x + r * a.cos(), y + r * a.sin())
        })
    }
    fn polygon(&self, z: f64, n: usize) -> Vec<PointMm> {
        (0..n)
            .map(|i| {
                let a = 2.0 * PI * i as f64 / n as f64;
                PointMm::new(self.cx + self.ax * a.cos(), self.cy + self.ay * a.sin(), z)
            })
            .collect()
    }
}

// Anatomy, mm. The lungs end at normalized body radius ≤ 0.85, inside the rib ring
// (0.88–0.93), so lung and rib never overlap and the LUNG contours are exactly the
// rendered lungs.
const BODY: Ellipse = Ellipse {
    cx: 0.0,
    cy: 0.0,
    ax: 170.0,
    ay: 115.0,
};
const RIGHT_LUNG: Ellipse = Ellipse {
    cx: -78.0,
    cy: -5.0,
    ax: 52.0,
    ay: 72.0,
};
const LEFT_LUNG: Ellipse = Ellipse {
    cx: 78.0,
    cy: -5.0,
    ax: 48.0,
    ay: 72.0,
};
const HEART: Ellipse = Ellipse {
    cx: 0.0,
    cy: -30.0,
    ax: 24.0,
    ay: 50.0,
};
const SKIN_RHO: f64 = 0.985;
const RIB_RHO: (f64, f64) = (0.88, 0.93);
/// Ribs repeat every `RIB_PERIOD_MM` along z and are `RIB_WIDTH_MM` wide.
const RIB_PERIOD_MM: f64 = 30.0;
const RIB_WIDTH_MM: f64 = 12.0;
/// No rib within this angle of anterior (sternal cartilage gap), degrees.
const RIB_ANTERIOR_GAP_DEG: f64 = 25.0;
const VERTEBRA: (f64, f64, f64) = (0.0, 65.0, 18.0);
const CORTEX_MM: f64 = 2.0;
const CANAL: (f64, f64, f64) = (0.0, 92.0, 7.0);
const ARCH_OUTER_MM: f64 = 12.0;

/// Nominal tissue values, HU.
const HU_AIR: f64 = -1000.0;
const HU_SKIN: f64 = 20.0;
const HU_SOFT: f64 = 40.0;
const HU_HEART: f64 = 45.0;
const HU_LUNG: f64 = -800.0;
const HU_TUMOR: f64 = 30.0;
const HU_RIB: f64 = 700.0;
const HU_CORTEX: f64 = 700.0;
const HU_SPONGY: f64 = 450.0;
const HU_CANAL: f64 = 15.0;
const HU_ARCH: f64 = 600.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    Static,
    Lung,
}

/// One plane wave of the texture.
#[derive(Debug, Clone, Copy)]
struct Wave {
    k: [f64; 3],
    phase: f64,
    amp: f64,
}

/// The generated phantom.
#[derive(Debug, Clone)]
pub struct Phantom {
    /// The specification it was built from.
    pub spec: PhantomSpec,
    /// The planning CT (no motion, no noise).
    pub ct: CtVolume,
    /// Tumor centre, LPS mm.
    pub tumor_center_mm: [f64; 3],
    /// Tumor (GTV) radius, mm.
    pub tumor_radius_mm: f64,
    /// PTV radius (GTV radius + margin), mm.
    pub ptv_radius_mm: f64,
    /// BODY, LUNG_L, LUNG_R, GTV, PTV contours on every slice of the grid.
    pub structures: StructureSet,
    waves: Vec<Wave>,
    /// Half-width of the tumor's partial-volume edge ramp, mm.
    edge_mm: f64,
}

impl Phantom {
    /// Builds the phantom: the planning CT and its structures.
    pub fn thorax(spec: &PhantomSpec) -> Result<Phantom, PhantomError> {
        spec.validate()?;
        let grid = spec.grid()?;
        let mut rng = SplitMix64::new(spec.seed);
        const N_WAVES: usize = 8;
        let waves = (0..N_WAVES)
            .map(|_| {
                // Uniform direction on the sphere, wavelength 10–40 mm.
                let u = 2.0 * rng.next_f64() - 1.0;
                let phi = 2.0 * PI * rng.next_f64();
                let s = (1.0 - u * u).sqrt();
                let lambda = 10.0 + 30.0 * rng.next_f64();
                let kn = 2.0 * PI / lambda;
                Wave {
                    k: [kn * s * phi.cos(), kn * s * phi.sin(), kn * u],
                    phase: 2.0 * PI * rng.next_f64(),
                    // Each sine has variance 1/2: N of them with this amplitude give σ = 1.
                    amp: (2.0 / N_WAVES as f64).sqrt(),
                }
            })
            .collect();
        let r = 0.5 * spec.tumor_diameter_mm;
        let edge_mm = 0.5 * spec.spacing_mm.iter().copied().fold(0.0, f64::max);
        let ct = CtVolume::filled(grid.clone(), 0);
        let mut ph = Phantom {
            spec: spec.clone(),
            ct,
            tumor_center_mm: spec.tumor_center_mm,
            tumor_radius_mm: r,
            ptv_radius_mm: r + spec.ptv_margin_mm,
            structures: StructureSet {
                frame_of_reference_uid: spec.frame_of_reference_uid.clone(),
                rois: Vec::new(),
            },
            waves,
            edge_mm,
        };
        let mut ct = CtVolume::filled(grid.clone(), 0);
        ph.render_full(&mut ct);
        ph.ct = ct;
        ph.structures.rois = ph.contours(&grid);
        Ok(ph)
    }

    /// The phantom grid.
    pub fn grid(&self) -> &Grid {
        self.ct.grid()
    }

    #[inline]
    fn texture(&self, p: [f64; 3]) -> f64 {
        self.waves
            .iter()
            // f32 sine: the texture is a registration aid, not a truth, and this halves the
            // cost of the per-frame lung render.
            .map(|w| {
                w.amp * f64::from(((w.k[0] * p[0] + w.k[1] * p[1] + w.k[2] * p[2] + w.phase) as f32).sin())
            })
            .sum()
    }

    /// Static anatomy at `p`: the HU of everything that does not move, or `Lung`.
    fn static_hu(&self, p: [f64; 3]) -> (Region, f64) {
        let [x, y, z] = p;
        let rho = BODY.rho(x, y);
        if rho >= 1.0 {
            return (Region::Static, HU_AIR);
        }
        if RIGHT_LUNG.contains(x, y) || LEFT_LUNG.contains(x, y) {
            return (Region::Lung, 0.0);
        }
        let tex = self.spec.texture_hu * self.texture(p);
        if rho >= SKIN_RHO {
            return (Region::Static, HU_SKIN + tex);
        }
        if (RIB_RHO.0..RIB_RHO.1).contains(&rho) {
            let in_band = (z - RIB_WIDTH_MM * 0.5).rem_euclid(RIB_PERIOD_MM) < RIB_WIDTH_MM;
            // Angle from anterior (−y in LPS).
            let from_anterior = x.atan2(-y).abs().to_degrees();
            if in_band && from_anterior > RIB_ANTERIOR_GAP_DEG {
                return (Region::Static, HU_RIB);
            }
        }
        let (vx, vy, vr) = VERTEBRA;
        let dv = ((x - vx).powi(2) + (y - vy).powi(2)).sqrt();
        if dv < vr {
            let hu = if dv > vr - CORTEX_MM { HU_CORTEX } else { HU_SPONGY };
            return (Region::Static, hu + tex);
        }
        let (cx, cy, cr) = CANAL;
        let dc = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
        if dc < cr {
            return (Region::Static, HU_CANAL);
        }
        if dc < ARCH_OUTER_MM {
            return (Region::Static, HU_ARCH);
        }
        if HEART.contains(x, y) {
            return (Region::Static, HU_HEART + tex);
        }
        (Region::Static, HU_SOFT + tex)
    }

    /// Lung parenchyma (and, if `with_tumor`, the tumor with a one-voxel partial-volume
    /// edge) at the undeformed point `q`.
    #[inline]
    fn lung_hu(&self, q: [f64; 3], with_tumor: bool) -> f64 {
        let tex = self.spec.texture_hu * self.texture(q);
        let lung = HU_LUNG + 2.0 * tex;
        if !with_tumor {
            return lung;
        }
        let c = self.tumor_center_mm;
        let r = ((q[0] - c[0]).powi(2) + (q[1] - c[1]).powi(2) + (q[2] - c[2]).powi(2)).sqrt();
        // Linear ramp of fraction over ±edge around the surface: sub-voxel position shows.
        let f = (0.5 - (r - self.tumor_radius_mm) / (2.0 * self.edge_mm)).clamp(0.0, 1.0);
        if f == 0.0 {
            lung
        } else {
            f * (HU_TUMOR + tex) + (1.0 - f) * lung
        }
    }

    /// Radius around the moved tumor centre within which lung moves rigidly with it, mm.
    fn rigid_radius_mm(&self) -> f64 {
        self.tumor_radius_mm + 2.0 * self.edge_mm + 1.0
    }

    /// Deformed lung value at `p` for tumor displacement `d`.
    #[inline]
    fn moved_lung_hu(&self, p: [f64; 3], d: [f64; 3]) -> f64 {
        let c = self.tumor_center_mm;
        let r = ((p[0] - c[0] - d[0]).powi(2) + (p[1] - c[1] - d[1]).powi(2) + (p[2] - c[2] - d[2]).powi(2))
            .sqrt();
        let r_in = self.rigid_radius_mm();
        if r <= r_in {
            return self.lung_hu([p[0] - d[0], p[1] - d[1], p[2] - d[2]], true);
        }
        let fall = self.spec.lung_falloff_mm;
        if fall <= 0.0 || r >= r_in + fall {
            return self.lung_hu(p, false);
        }
        let w = (0.5 * PI * (r - r_in) / fall).cos().powi(2);
        // Outside the rigid shell the pulled-back point cannot reach the tumor as long as
        // the map does not fold (checked by the caller), so the tumor term is skipped.
        self.lung_hu([p[0] - w * d[0], p[1] - w * d[1], p[2] - w * d[2]], false)
    }

    fn render_full(&self, out: &mut CtVolume) {
        let grid = out.grid().clone();
        let [nx, ny, nz] = grid.dims();
        let data = out.as_slice_mut();
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let p = grid.index_to_patient([i as f64, j as f64, k as f64]);
                    let p = [p.x, p.y, p.z];
                    let hu = match self.static_hu(p) {
                        (Region::Static, hu) => hu,
                        (Region::Lung, _) => self.moved_lung_hu(p, [0.0; 3]),
                    };
                    data[(k * ny + j) * nx + i] = quantize(hu);
                }
            }
        }
    }

    /// First phantom slice of `out`'s grid if it is the phantom grid or a slab of whole
    /// slices of it.
    pub fn slab_offset(&self, out: &Grid) -> Result<usize, PhantomError> {
        let g = self.grid();
        let mismatch = |reason: String| Err(PhantomError::GridMismatch { reason });
        let (od, gd) = (out.dims(), g.dims());
        if od[0] != gd[0] || od[1] != gd[1] {
            return mismatch(format!("in-plane size {:?} vs {:?}", &od[..2], &gd[..2]));
        }
        let (os, gs) = (out.spacing_mm(), g.spacing_mm());
        if os.iter().zip(gs).any(|(a, b)| (a - b).abs() > 1e-9) {
            return mismatch(format!("spacing {os:?} vs {gs:?}"));
        }
        if (out.direction() - g.direction()).abs().max() > 1e-9 {
            return mismatch("direction cosines differ".into());
        }
        let (oo, go) = (out.origin_mm(), g.origin_mm());
        if (oo.x - go.x).abs() > 1e-6 || (oo.y - go.y).abs() > 1e-6 {
            return mismatch(format!(
                "in-plane origin ({}, {}) vs ({}, {})",
                oo.x, oo.y, go.x, go.y
            ));
        }
        let kf = (oo.z - go.z) / gs[2];
        let k0 = kf.round();
        if (kf - k0).abs() > 1e-6 || k0 < 0.0 || k0 as usize + od[2] > gd[2] {
            return mismatch(format!(
                "slab origin z {} mm is not on a phantom slice with {} slices inside",
                oo.z, od[2]
            ));
        }
        Ok(k0 as usize)
    }

    /// A slab grid of `n_slices` phantom slices centred on the tumor (clamped to the
    /// volume).
    pub fn slab_grid(&self, n_slices: usize) -> Result<Grid, PhantomError> {
        let g = self.grid();
        let [nx, ny, nz] = g.dims();
        if n_slices == 0 || n_slices > nz {
            return Err(PhantomError::BadSpec {
                name: "slab slices",
                reason: format!("must be 1..={nz}, got {n_slices}"),
            });
        }
        let kc = g.patient_to_index(&PointMm::from(self.tumor_center_mm))[2].round() as i64;
        let k0 = (kc - n_slices as i64 / 2).clamp(0, (nz - n_slices) as i64) as f64;
        let o = g.index_to_patient([0.0, 0.0, k0]);
        Ok(Grid::axis_aligned([nx, ny, n_slices], o, g.spacing_mm())?)
    }

    /// Renders the anatomy with the tumor moved by `displacement_mm` (LPS) and the lung
    /// around it following, into `out` — the phantom grid or a slab of it
    /// ([`Phantom::slab_grid`]). Static anatomy is copied from the planning CT; only the
    /// lung near the tumor is evaluated, so a frame costs little more than a copy.
    pub fn render_moved(&self, displacement_mm: [f64; 3], out: &mut CtVolume) -> Result<(), PhantomError> {
        let d = displacement_mm;
        let bad = |reason: String| PhantomError::BadDisplacement {
            displacement_mm: d,
            reason,
        };
        if !d.iter().all(|v| v.is_finite()) {
            return Err(bad("not finite".into()));
        }
        let dn = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        let fall = self.spec.lung_falloff_mm;
        // |∇w|·|d| < 1 keeps p ↦ p − w(p)·d one-to-one; the cos² ramp's steepest slope is
        // π / (2·falloff).
        if fall > 0.0 && dn * PI / (2.0 * fall) >= 0.9 {
            return Err(bad(format!(
                "{dn:.1} mm is too large for a {fall} mm lung falloff (the lung would fold)"
            )));
        }
        let k0 = self.slab_offset(out.grid())?;
        let grid = out.grid().clone();
        let [nx, ny, nz] = grid.dims();
        let plane = nx * ny;
        let src = &self.ct.as_slice()[k0 * plane..(k0 + nz) * plane];
        let dst = out.as_slice_mut();
        dst.copy_from_slice(src);

        // Box covering where the tumor was and where it is, plus the falloff.
        let c = self.tumor_center_mm;
        let r_in = self.rigid_radius_mm();
        let reach = r_in + fall + 1.0;
        let mut lo = [0usize; 3];
        let mut hi = [0usize; 3];
        for a in 0..3 {
            let mut pmin = PointMm::from(c);
            let mut pmax = PointMm::from(c);
            pmin[a] = c[a].min(c[a] + d[a]) - reach;
            pmax[a] = c[a].max(c[a] + d[a]) + reach;
            let (imin, imax) = (grid.patient_to_index(&pmin)[a], grid.patient_to_index(&pmax)[a]);
            let (imin, imax) = (imin.min(imax), imin.max(imax));
            let n = grid.dims()[a] as f64;
            lo[a] = imin.floor().clamp(0.0, n) as usize;
            hi[a] = (imax.ceil() + 1.0).clamp(0.0, n) as usize;
        }
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    let pt = grid.index_to_patient([i as f64, j as f64, k as f64]);
                    let p = [pt.x, pt.y, pt.z];
                    // Beyond the falloff of the moved tumor and the rigid shell of the planned
                    // one, the lung equals the planning CT already copied.
                    let r1 = dist(p, [c[0] + d[0], c[1] + d[1], c[2] + d[2]]);
                    if r1 >= r_in + fall && dist(p, c) > r_in {
                        continue;
                    }
                    let in_lung = RIGHT_LUNG.contains(p[0], p[1]) || LEFT_LUNG.contains(p[0], p[1]);
                    if in_lung && BODY.rho(p[0], p[1]) < 1.0 {
                        dst[(k * ny + j) * nx + i] = quantize(self.moved_lung_hu(p, d));
                    }
                }
            }
        }
        Ok(())
    }

    fn contours(&self, grid: &Grid) -> Vec<Roi> {
        let nz = grid.dims()[2];
        let zs: Vec<f64> = (0..nz)
            .map(|k| grid.index_to_patient([0.0, 0.0, k as f64]).z)
            .collect();
        let ellipse_roi = |number, name: &str, e: &Ellipse| Roi {
            number,
            name: name.to_string(),
            contours: zs.iter().map(|&z| Contour::new(e.polygon(z, 180))).collect(),
        };
        let c = self.tumor_center_mm;
        let sphere_roi = |number, name: &str, r: f64| Roi {
            number,
            name: name.to_string(),
            contours: zs
                .iter()
                .filter(|&&z| (z - c[2]).abs() < r)
                .map(|&z| {
                    let rz = (r * r - (z - c[2]).powi(2)).sqrt();
                    Contour::new(circle_polygon(c[0], c[1], z, rz, 96))
                })
                .collect(),
        };
        vec![
            ellipse_roi(1, "BODY", &BODY),
            ellipse_roi(2, "LUNG_L", &LEFT_LUNG),
            ellipse_roi(3, "LUNG_R", &RIGHT_LUNG),
            sphere_roi(4, "GTV", self.tumor_radius_mm),
            sphere_roi(5, "PTV", self.ptv_radius_mm),
        ]
    }

    /// Where the planning point `q` is when the tumor is displaced by `displacement_mm`:
    /// the inverse of [`Phantom::render_moved`]'s pull-back `p ↦ p − w(p)·d` (lung only;
    /// everything else stays put). Solved by fixed-point iteration `p ← q + w(p)·d`, a
    /// contraction because `render_moved` refuses displacements with `|∇w|·|d| ≥ 0.9`.
    /// The 4D dose maps each instant's dose back to the planning CT through it.
    pub fn moved_point(&self, q: [f64; 3], displacement_mm: [f64; 3]) -> [f64; 3] {
        let d = displacement_mm;
        let in_lung = RIGHT_LUNG.contains(q[0], q[1]) || LEFT_LUNG.contains(q[0], q[1]);
        if !(in_lung && BODY.rho(q[0], q[1]) < 1.0) {
            return q;
        }
        let c = self.tumor_center_mm;
        let r_in = self.rigid_radius_mm();
        let fall = self.spec.lung_falloff_mm;
        let weight = |p: [f64; 3]| -> f64 {
            let r = dist(p, [c[0] + d[0], c[1] + d[1], c[2] + d[2]]);
            if r <= r_in {
                1.0
            } else if fall <= 0.0 || r >= r_in + fall {
                0.0
            } else {
                (0.5 * PI * (r - r_in) / fall).cos().powi(2)
            }
        };
        let mut p = q;
        for _ in 0..60 {
            let w = weight(p);
            let next = [q[0] + w * d[0], q[1] + w * d[1], q[2] + w * d[2]];
            let step = dist(next, p);
            p = next;
            if step < 1e-6 {
                break;
            }
        }
        p
    }

    /// Whether a point lies inside the PTV grown by `margin_mm` (truth from the geometry).
    pub fn in_ptv(&self, p: &PointMm, margin_mm: f64) -> bool {
        let c = PointMm::from(self.tumor_center_mm);
        (p - c).norm() <= self.ptv_radius_mm + margin_mm
    }
}

/// A regular polygon with the same area as the circle, so rasterized volumes are unbiased.
fn circle_polygon(cx: f64, cy: f64, z: f64, r: f64, n: usize) -> Vec<PointMm> {
    let step = 2.0 * PI / n as f64;
    let r_eq = r * (step / step.sin()).sqrt();
    (0..n)
        .map(|i| {
            let a = step * i as f64;
            PointMm::new(cx + r_eq * a.cos(), cy + r_eq * a.sin(), z)
        })
        .collect()
}

#[inline]
fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

#[inline]
fn quantize(hu: f64) -> Hu {
    hu.round().clamp(Hu::MIN as f64, Hu::MAX as f64) as Hu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anatomy_values_at_known_points() {
        let ph = Phantom::thorax(&PhantomSpec {
            texture_hu: 0.0,
            ..PhantomSpec::small()
        })
        .unwrap();
        let hu = |x: f64, y: f64, z: f64| {
            let idx = ph.grid().patient_to_index(&PointMm::new(x, y, z));
            *ph.ct
                .get(
                    idx[0].round() as usize,
                    idx[1].round() as usize,
                    idx[2].round() as usize,
                )
                .unwrap() as f64
        };
        assert_eq!(hu(-185.0, 0.0, 0.0), HU_AIR);
        assert_eq!(hu(-75.0, -10.0, 0.0), HU_TUMOR);
        assert_eq!(hu(-110.0, -40.0, 0.0), HU_LUNG);
        assert_eq!(hu(100.0, 20.0, 0.0), HU_LUNG);
        assert_eq!(hu(0.0, 62.0, 0.0), HU_SPONGY);
        assert_eq!(hu(0.0, -30.0, 0.0), HU_HEART);
    }

    #[test]
    fn tumor_outside_the_lungs_is_refused() {
        let spec = PhantomSpec {
            tumor_center_mm: [0.0, 0.0, 0.0],
            ..PhantomSpec::small()
        };
        assert!(matches!(
            Phantom::thorax(&spec),
            Err(PhantomError::BadSpec { .. })
        ));
    }
}
