//! Deformable registration of a frame to the planning CT in the target region, on top of the
//! rigid result, and the planning target carried into the frame.
//!
//! # Convention
//!
//! The result maps a planning-CT point `x` to the frame as `φ(x) = T(x + u(x))`: first the
//! displacement field `u` (planning coordinates, [`DisplacementField`]), then the rigid
//! transform `T` of the [`Registrar`](super::Registrar) (same convention as the rigid module).
//! The frame's target is the planning target pulled back through `φ⁻¹(y) = T⁻¹(y) + v(T⁻¹(y))`
//! with `v` the inverse field.
//!
//! # Method: demons, not a B-spline free-form deformation
//!
//! Demons (Thirion 1998; the normalised per-voxel force as in ITK's demons filters) on an
//! isotropic grid over the target
//! region plus a pad, multi-resolution (2×2×2 block-averaged levels, coarse to fine),
//! regularised twice per iteration: the update is smoothed by a Gaussian (fluid-like) and the
//! accumulated field by another (diffusion-like, the Gaussian stands in for a membrane
//! energy). The force is the analytic gradient of the SSD with respect to each voxel's
//! displacement: the exact gradient of the trilinear interpolant of the moving image at the
//! warped point (a Gauss–Newton step per voxel, normalised as in demons). Not the usual
//! symmetric force's mean of central-difference gradients: at a level's Nyquist scale that
//! gradient disagrees with the interpolant's slope, the per-voxel update's gain exceeds one,
//! and on STS_002 registered to itself rounding-level differences grew ×2.6 per iteration
//! into a 1.3 mm field; the interpolant's own gradient makes the step consistent.
//!
//! The field update carries heavy-ball momentum, restarted when the difference rose
//! ([`DeformOptions::momentum`]): with the field smoothed every iteration, plain demons
//! creeps to its fixed point, and momentum lets the 2 mm level stop at 10 iterations where
//! it needed 60.
//!
//! Why demons: (1) each iteration is one pass over the region's voxels plus separable
//! blurs — no per-sample B-spline weights (64 per sample for a cubic FFD) and no large
//! normal equations (on this project's 2-core VM a 2 mm iteration over a 128 mm region,
//! 76³ voxels, takes ~19 ms of CPU: the cost is the trilinear warp with its gradient and
//! the 1-D blurs, three for each component of the step and of the field, see [`demons`]);
//! (2) the field lives on the image grid, so the 40 % local shrink of a tumor is
//! represented without choosing a control spacing fine enough for it over the whole region;
//! (3) warm start is trivial (the previous field is the start). Its weakness — no guarantee
//! of invertibility — is covered by the checks below, which every result passes through.
//! Same-modality, HU-calibrated images make SSD the right similarity, as in the rigid module.
//!
//! # Checks
//!
//! [`DeformVerdict`] names the first failed check, in the order field too large, folding
//! (Jacobian determinant minimum), inverse inconsistency (`|u(x) + v(x + u(x))|`), poor
//! similarity (NCC over the region below a floor, or worse than the rigid result's).
//! They run over z-slabs on the options' threads; the inverse field's fixed point is
//! solved voxel by voxel with an early stop (see [`DisplacementField::inverse_threads`]).

pub mod demons;
pub mod field;

pub use field::{DisplacementField, FieldGrid};

use demons::{run_level, LevelImage, LevelSettings, Scratch};

use crate::geometry::{Grid, RigidTransform};
use crate::units::PointMm;
use crate::volume::{CtVolume, MaskVolume};

use super::roi::BoxMm;

/// Fill for a volume of no voxels, HU (air).
const OUTSIDE_HU: f32 = -1000.0;

/// Why a deformable registration could not be attempted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DeformError {
    /// An option is out of range.
    #[error("deformable registration option {name} = {value} is out of range")]
    BadOption {
        /// Option name.
        name: &'static str,
        /// Value given.
        value: f64,
    },
    /// The region does not lie on the planning CT.
    #[error("deformable region {lo_mm:?}..{hi_mm:?} mm: only {fraction:.2} of its grid points lie on the planning CT (need 0.5)")]
    RegionOutsideFixed {
        /// Lower corner.
        lo_mm: [f64; 3],
        /// Upper corner.
        hi_mm: [f64; 3],
        /// Fraction inside.
        fraction: f64,
    },
    /// The coarsest level would have fewer than 4 voxels along an axis.
    #[error("deformable region of {dims:?} voxels at {spacing_mm} mm is too small for {levels} levels")]
    RegionTooSmall {
        /// Finest-level dimensions.
        dims: [usize; 3],
        /// Finest spacing, mm.
        spacing_mm: f64,
        /// Levels asked for.
        levels: usize,
    },
    /// A warm-start field on another grid.
    #[error("warm-start field grid differs from this region's")]
    WarmGridMismatch,
}

/// Settings and quality limits of the deformable registration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeformOptions {
    /// Finest grid spacing, mm.
    pub spacing_mm: f64,
    /// Pyramid levels of a cold start (each halves the resolution).
    pub levels: usize,
    /// Iteration cap per level of a cold start, coarsest first (the last entry repeats).
    pub iterations: Vec<u32>,
    /// Iteration cap of a warm start (finest level only).
    pub warm_iterations: u32,
    /// Grid pad around the region, mm: room for the field to fall off.
    pub pad_mm: f64,
    /// Update smoothing, voxels (σ of the Gaussian).
    pub fluid_sigma_vox: f64,
    /// Field smoothing, voxels.
    pub diffusion_sigma_vox: f64,
    /// Largest update per iteration, voxels.
    pub max_step_vox: f64,
    /// A level stops when its mean squared difference fell by less than this fraction over
    /// the last four iterations; 0 turns the check off (the default). Demons with a smoothed
    /// field does not minimise the difference, which with 20 HU noise is mostly noise: on
    /// STS_002 (tests/deformable_real.rs) the 4 mm level's difference rose at iteration 50
    /// while running it to 100 took the mean TRE from 0.67 to 0.51 mm.
    pub stall_fraction: f64,
    /// Momentum β of the field update, `0 ≤ β < 1`: each step starts from the last field
    /// extrapolated by β times its last change (heavy ball, restarted when the difference
    /// rose). Smoothing damps the field's fine components a little each iteration, so plain
    /// demons creeps towards its fixed point; momentum takes it there in far fewer
    /// iterations (0.8 with caps 100/100/10 beat 0 with 60/40/60 on every case of
    /// tests/deformable_real.rs at a third of the 2 mm iterations).
    pub momentum: f64,
    /// Fixed-point iterations of the inverse field.
    pub inverse_iterations: usize,
    /// Lowest acceptable Jacobian determinant (≤ 0 is folding).
    pub min_jacobian: f64,
    /// Largest acceptable inverse-consistency error, mm.
    pub max_inverse_error_mm: f64,
    /// Largest acceptable displacement, mm.
    pub max_field_mm: f64,
    /// Lowest acceptable NCC over the region after deformation.
    pub min_similarity: f64,
    /// How much worse than the rigid result's NCC the deformed NCC may be.
    pub max_similarity_loss: f64,
    /// Scoped threads for the per-voxel passes (1 = the caller's thread only).
    pub threads: usize,
    /// Gradient floor, HU/mm: its square joins the force's denominator, so flat regions
    /// (where the gradient is noise or rounding) are not pushed by tiny differences — the
    /// classic demons instability. Tissue edges have 50–1000 HU/mm; 20 HU noise at 2 mm
    /// gives ~10 HU/mm.
    pub gradient_floor_hu_per_mm: f64,
    /// Gaussian smoothing of every level's images, voxels. The demons update linearises the
    /// warped image about each voxel; at a level's Nyquist scale (a bright voxel between
    /// darker ones) the central-difference gradient is near zero while the interpolant's
    /// slope is not, the update's gain exceeds one, and tiny differences grow into a field
    /// of a few mm (seen on STS_002 against itself: MSE ×2.6 per iteration from 1e-8 HU²).
    /// Smoothing to the grid's scale keeps the linearisation valid.
    pub image_sigma_vox: f64,
}

impl DeformOptions {
    /// Sets [`DeformOptions::threads`].
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
    /// Sets [`DeformOptions::spacing_mm`].
    pub fn with_spacing_mm(mut self, spacing_mm: f64) -> Self {
        self.spacing_mm = spacing_mm;
        self
    }
    /// Sets [`DeformOptions::iterations`].
    pub fn with_iterations(mut self, iterations: Vec<u32>) -> Self {
        self.iterations = iterations;
        self
    }
    /// Sets [`DeformOptions::warm_iterations`].
    pub fn with_warm_iterations(mut self, warm_iterations: u32) -> Self {
        self.warm_iterations = warm_iterations;
        self
    }
    /// Sets [`DeformOptions::diffusion_sigma_vox`].
    pub fn with_diffusion_sigma_vox(mut self, sigma: f64) -> Self {
        self.diffusion_sigma_vox = sigma;
        self
    }
    /// Sets [`DeformOptions::momentum`].
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// Sets [`DeformOptions::fluid_sigma_vox`].
    pub fn with_fluid_sigma_vox(mut self, sigma: f64) -> Self {
        self.fluid_sigma_vox = sigma;
        self
    }
}

impl Default for DeformOptions {
    fn default() -> Self {
        DeformOptions {
            spacing_mm: 2.0,
            levels: 3,
            iterations: vec![100, 100, 10],
            warm_iterations: 10,
            pad_mm: 10.0,
            fluid_sigma_vox: 1.0,
            diffusion_sigma_vox: 1.0,
            max_step_vox: 0.5,
            stall_fraction: 0.0,
            momentum: 0.8,
            inverse_iterations: 12,
            min_jacobian: 0.2,
            max_inverse_error_mm: 1.0,
            max_field_mm: 30.0,
            min_similarity: 0.85,
            max_similarity_loss: 0.01,
            threads: 1,
            gradient_floor_hu_per_mm: 1.0,
            image_sigma_vox: 0.5,
        }
    }
}

impl DeformOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), DeformError> {
        let bad = |name, value: f64| Err(DeformError::BadOption { name, value });
        if self.threads == 0 || self.threads > 64 {
            return bad("threads", self.threads as f64);
        }
        if self.levels == 0 || self.levels > 5 {
            return bad("levels", self.levels as f64);
        }
        if self.iterations.is_empty() || self.iterations.contains(&0) {
            return bad("iterations", 0.0);
        }
        for (name, v) in [
            ("spacing_mm", self.spacing_mm),
            ("max_step_vox", self.max_step_vox),
            ("max_inverse_error_mm", self.max_inverse_error_mm),
            ("max_field_mm", self.max_field_mm),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(name, v);
            }
        }
        for (name, v) in [
            ("pad_mm", self.pad_mm),
            ("fluid_sigma_vox", self.fluid_sigma_vox),
            ("diffusion_sigma_vox", self.diffusion_sigma_vox),
            ("stall_fraction", self.stall_fraction),
            ("max_similarity_loss", self.max_similarity_loss),
            ("gradient_floor_hu_per_mm", self.gradient_floor_hu_per_mm),
            ("image_sigma_vox", self.image_sigma_vox),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(name, v);
            }
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", self.momentum);
        }
        if !(self.min_jacobian.is_finite() && self.min_jacobian < 1.0) {
            return bad("min_jacobian", self.min_jacobian);
        }
        if !(-1.0..=1.0).contains(&self.min_similarity) {
            return bad("min_similarity", self.min_similarity);
        }
        Ok(())
    }
}

/// The planning CT side, prepared once per plan: the region's grid and fixed pyramid.
#[derive(Debug, Clone)]
pub struct DeformFixed {
    /// Index 0 is the finest.
    levels: Vec<LevelImage>,
    region: BoxMm,
    /// Finest-level voxel ranges inside the region (for the similarity), per axis.
    core: [std::ops::Range<usize>; 3],
    options: DeformOptions,
}

impl DeformFixed {
    /// Samples `planning` over `region` (grown by `options.pad_mm`) on the level grids.
    pub fn new(planning: &CtVolume, region: BoxMm, options: DeformOptions) -> Result<Self, DeformError> {
        options.validate()?;
        let h = options.spacing_mm;
        let outer = region.grown(options.pad_mm).map_err(|_| DeformError::BadOption {
            name: "pad_mm",
            value: options.pad_mm,
        })?;
        let block = 1usize << (options.levels - 1);
        let dims = [0, 1, 2].map(|a| {
            let n = ((outer.hi_mm[a] - outer.lo_mm[a]) / h).ceil() as usize;
            n.div_ceil(block) * block
        });
        if dims.iter().any(|&n| n / block < 4) {
            return Err(DeformError::RegionTooSmall {
                dims,
                spacing_mm: h,
                levels: options.levels,
            });
        }
        let centre = outer.center_mm();
        let origin_mm = [0, 1, 2].map(|a| centre[a] - h * (dims[a] as f64 - 1.0) / 2.0);
        let grid = FieldGrid {
            origin_mm,
            spacing_mm: h,
            dims,
        };
        let (data, inside) = sample_through(planning, &grid, &RigidTransform::identity(), options.threads);
        let fraction = inside as f64 / grid.len() as f64;
        if fraction < 0.5 {
            return Err(DeformError::RegionOutsideFixed {
                lo_mm: outer.lo_mm.coords.into(),
                hi_mm: outer.hi_mm.coords.into(),
                fraction,
            });
        }
        let mut levels = vec![LevelImage { grid, data }];
        for _ in 1..options.levels {
            let next = levels.last().map(LevelImage::halved).expect("level 0 exists");
            levels.push(next);
        }
        smooth_levels(&mut levels, options.image_sigma_vox, options.threads);
        let core = [0, 1, 2].map(|a| {
            let lo = ((region.lo_mm[a] - origin_mm[a]) / h).ceil().max(0.0) as usize;
            let hi = (((region.hi_mm[a] - origin_mm[a]) / h).floor() as usize + 1).min(dims[a]);
            lo..hi.max(lo)
        });
        Ok(DeformFixed {
            levels,
            region,
            core,
            options,
        })
    }

    /// The finest grid (the field's).
    pub fn grid(&self) -> &FieldGrid {
        &self.levels[0].grid
    }

    /// The region (without the pad).
    pub fn region(&self) -> &BoxMm {
        &self.region
    }

    /// The options this context was built with.
    pub fn options(&self) -> &DeformOptions {
        &self.options
    }
}

/// Blurs every level image by `sigma_vox` voxels.
fn smooth_levels(levels: &mut [LevelImage], sigma_vox: f64, threads: usize) {
    let kernel = demons::gaussian_kernel(sigma_vox);
    let mut tmp = Vec::new();
    for l in levels {
        demons::blur(&mut l.data, l.grid.dims, &kernel, &mut tmp, threads);
    }
}

/// `volume(T(x))` at every point `x` of `grid` (trilinear, the volume's edge extended
/// beyond it), and how many points fell inside the volume. Edge extension rather than an
/// air fill: a fill makes a step at the volume's border that moves with `T`, and a
/// hundredth of a millimetre of rigid residual there drives the demons forces hard.
fn sample_through(
    volume: &CtVolume,
    grid: &FieldGrid,
    t: &RigidTransform,
    threads: usize,
) -> (Vec<f32>, usize) {
    let mut out = vec![OUTSIDE_HU; grid.len()];
    let vg = volume.grid();
    let p2i = vg.patient_to_index_matrix();
    // x ↦ index of T(x) is affine in (i, j, k): step along i adds a constant
    let step = p2i * t.rotation.matrix() * grid.spacing_mm;
    let origin = p2i * (t.apply(&PointMm::from(nalgebra::Vector3::from(grid.origin_mm))) - vg.origin_mm());
    let [nx, ny, nz] = grid.dims;
    let dims = vg.dims();
    let inside = demons::par_z(threads, nz, nx * ny, [&mut out[..]], |ks, [dst]| {
        let mut inside = 0;
        let mut o = 0;
        for k in ks {
            for j in 0..ny {
                let row = origin + step.column(1) * j as f64 + step.column(2) * k as f64;
                for i in 0..nx {
                    let ijk = row + step.column(0) * i as f64;
                    let ijk = [ijk.x, ijk.y, ijk.z];
                    let clamped = [0, 1, 2].map(|a| ijk[a].clamp(0.0, (dims[a] - 1) as f64));
                    inside += usize::from(clamped == ijk);
                    if let Some(v) = volume.sample_index_linear(clamped) {
                        dst[o] = v;
                    }
                    o += 1;
                }
            }
        }
        inside
    });
    (out, inside.into_iter().sum())
}

/// Why a deformable result must not be used.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum DeformFailure {
    /// A displacement beyond the limit.
    FieldTooLarge {
        /// Largest displacement, mm.
        mm: f64,
        /// Limit, mm.
        limit_mm: f64,
    },
    /// The map (nearly) folds somewhere.
    Folding {
        /// Smallest Jacobian determinant.
        jacobian_min: f64,
        /// Limit.
        limit: f64,
    },
    /// The inverse field does not undo the field.
    InverseInconsistent {
        /// Largest `|u(x) + v(x + u(x))|`, mm.
        mm: f64,
        /// Limit, mm.
        limit_mm: f64,
    },
    /// The deformed frame does not look like the planning CT (or less so than rigidly).
    PoorSimilarity {
        /// NCC over the region after deformation.
        value: f64,
        /// NCC after the rigid transform alone.
        rigid: f64,
        /// Floor.
        limit: f64,
    },
}

/// The quality verdict of one deformable registration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeformVerdict {
    /// Every check passed.
    Accept,
    /// The first check that failed.
    Reject(DeformFailure),
}

impl DeformVerdict {
    /// Whether every check passed.
    pub fn is_accept(&self) -> bool {
        matches!(self, DeformVerdict::Accept)
    }
}

/// One deformable registration result.
#[derive(Debug, Clone)]
pub struct DeformableRegistration {
    /// The rigid transform the field sits on (planning → frame).
    pub rigid: RigidTransform,
    /// `u`, planning coordinates.
    pub field: DisplacementField,
    /// `v`, the inverse of `u` on the same grid.
    pub inverse: DisplacementField,
    /// Demons iterations over all levels.
    pub iterations: u32,
    /// NCC over the region after deformation.
    pub similarity_ncc: f64,
    /// NCC over the region after the rigid transform alone.
    pub rigid_similarity_ncc: f64,
    /// Smallest Jacobian determinant of `x ↦ x + u(x)`.
    pub jacobian_min: f64,
    /// Largest Jacobian determinant.
    pub jacobian_max: f64,
    /// Largest displacement, mm.
    pub field_max_mm: f64,
    /// Largest inverse-consistency error, mm.
    pub inverse_error_mm: f64,
    /// The quality verdict.
    pub verdict: DeformVerdict,
}

impl DeformableRegistration {
    /// `φ(p) = T(p + u(p))`: a planning-CT point in the frame.
    pub fn map_mm(&self, p: &PointMm) -> PointMm {
        self.rigid.apply(&self.field.map_mm(p))
    }

    /// `φ⁻¹(y)`: a frame point in the planning CT.
    pub fn map_inverse_mm(&self, y: &PointMm) -> PointMm {
        self.inverse.map_mm(&self.rigid.inverse().apply(y))
    }

    /// The planning target carried into the frame, on `out_grid`: a frame voxel belongs to
    /// it when the planning mask, trilinearly interpolated at `φ⁻¹(y)`, is at least ½.
    pub fn propagate(&self, planning_mask: &MaskVolume, out_grid: &Grid) -> PropagatedTarget {
        let pg = planning_mask.grid();
        let [px, py, _] = pg.dims();
        let mut planned = 0usize;
        let mut psum = nalgebra::Vector3::zeros();
        let mut corners_lo = [f64::INFINITY; 3];
        let mut corners_hi = [f64::NEG_INFINITY; 3];
        for (o, &v) in planning_mask.as_slice().iter().enumerate() {
            if v == 0 {
                continue;
            }
            let p = pg.index_to_patient([(o % px) as f64, ((o / px) % py) as f64, (o / (px * py)) as f64]);
            planned += 1;
            psum += p.coords;
            for a in 0..3 {
                corners_lo[a] = corners_lo[a].min(p[a]);
                corners_hi[a] = corners_hi[a].max(p[a]);
            }
        }
        let mut mask = MaskVolume::filled(out_grid.clone(), 0);
        let planned_volume_cc = planned as f64 * pg.voxel_volume_mm3() / 1000.0;
        let mut result = PropagatedTarget {
            mask: MaskVolume::filled(out_grid.clone(), 0),
            voxels: 0,
            volume_cc: 0.0,
            planned_volume_cc,
            volume_change_pct: -100.0,
            centroid_mm: None,
            planned_centroid_mm: (planned > 0).then(|| PointMm::from(psum / planned as f64)),
        };
        if planned == 0 {
            return result;
        }
        // Frame voxels that can hold the target: the planning bounding box grown by the
        // field's reach and a voxel, mapped through T.
        let reach = self.field_max_mm + pg.spacing_mm().iter().copied().fold(0.0, f64::max);
        let og = out_grid.dims();
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for c in 0..8 {
            let p = PointMm::from(nalgebra::Vector3::from([0, 1, 2].map(|a| {
                if c & (1 << a) != 0 {
                    corners_hi[a] + reach
                } else {
                    corners_lo[a] - reach
                }
            })));
            let idx = out_grid.patient_to_index(&self.rigid.apply(&p));
            for a in 0..3 {
                lo[a] = lo[a].min(idx[a]);
                hi[a] = hi[a].max(idx[a]);
            }
        }
        let range = |a: usize| {
            let l = lo[a].floor().max(0.0) as usize;
            let h = (hi[a].ceil().max(-1.0) + 1.0).min(og[a] as f64) as usize;
            l..h.max(l)
        };
        let (ri, rj, rk) = (range(0), range(1), range(2));
        let t_inv = self.rigid.inverse();
        let mut n = 0usize;
        let mut sum = nalgebra::Vector3::zeros();
        for k in rk {
            for j in rj.clone() {
                for i in ri.clone() {
                    let y = out_grid.index_to_patient([i as f64, j as f64, k as f64]);
                    let x = self.inverse.map_mm(&t_inv.apply(&y));
                    if planning_mask.sample_linear(&x).is_some_and(|v| v >= 0.5) {
                        *mask.get_mut(i, j, k).expect("index in range") = 1;
                        n += 1;
                        sum += y.coords;
                    }
                }
            }
        }
        result.mask = mask;
        result.voxels = n;
        result.volume_cc = n as f64 * out_grid.voxel_volume_mm3() / 1000.0;
        result.volume_change_pct = 100.0 * (result.volume_cc / planned_volume_cc - 1.0);
        result.centroid_mm = (n > 0).then(|| PointMm::from(sum / n as f64));
        result
    }
}

/// The planning target in a frame.
#[derive(Debug, Clone)]
pub struct PropagatedTarget {
    /// 1 inside, on the output grid.
    pub mask: MaskVolume,
    /// Voxels set.
    pub voxels: usize,
    /// Volume in the frame, cm³.
    pub volume_cc: f64,
    /// Volume of the planning mask, cm³.
    pub planned_volume_cc: f64,
    /// `100 · (volume / planned − 1)`, %.
    pub volume_change_pct: f64,
    /// Centroid in the frame, mm (`None` if empty).
    pub centroid_mm: Option<PointMm>,
    /// Centroid in the planning CT, mm.
    pub planned_centroid_mm: Option<PointMm>,
}

/// Runs deformable registrations, keeping its scratch buffers between frames.
#[derive(Debug, Default)]
pub struct DeformableRegistrar {
    scratch: Scratch,
}

impl DeformableRegistrar {
    /// A registrar with empty scratch buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `frame` to the planning side `fixed` on top of `rigid` (planning → frame).
    /// With `warm`, a previous field on the same grid, only the finest level runs, for
    /// `warm_iterations`; otherwise every level runs from the zero field.
    pub fn register(
        &mut self,
        fixed: &DeformFixed,
        frame: &CtVolume,
        rigid: &RigidTransform,
        warm: Option<&DisplacementField>,
    ) -> Result<DeformableRegistration, DeformError> {
        let opts = &fixed.options;
        let grid0 = *fixed.grid();
        let (m0, _) = sample_through(frame, &grid0, rigid, opts.threads);
        let mut moving = vec![LevelImage {
            grid: grid0,
            data: m0,
        }];
        let first_level = match warm {
            Some(w) => {
                if w.grid() != &grid0 {
                    return Err(DeformError::WarmGridMismatch);
                }
                0
            }
            None => fixed.levels.len() - 1,
        };
        for _ in 0..first_level {
            let next = moving.last().map(LevelImage::halved).expect("level 0 exists");
            moving.push(next);
        }
        smooth_levels(&mut moving, opts.image_sigma_vox, opts.threads);
        let mut u = match warm {
            Some(w) => w.clone(),
            None => DisplacementField::zeros(fixed.levels[first_level].grid),
        };
        let mut iterations = 0;
        for level in (0..=first_level).rev() {
            if u.grid() != &fixed.levels[level].grid {
                u = u.resampled_threads(fixed.levels[level].grid, opts.threads);
            }
            let cap = if warm.is_some() {
                opts.warm_iterations
            } else {
                let step = first_level - level;
                *opts
                    .iterations
                    .get(step)
                    .or(opts.iterations.last())
                    .expect("validated")
            };
            let h = fixed.levels[level].grid.spacing_mm;
            let settings = LevelSettings {
                iterations: cap,
                max_step_mm: (opts.max_step_vox * h) as f32,
                fluid_kernel_sigma_vox: opts.fluid_sigma_vox,
                diffusion_kernel_sigma_vox: opts.diffusion_sigma_vox,
                stall_fraction: opts.stall_fraction,
                threads: opts.threads,
                gradient_floor2: (opts.gradient_floor_hu_per_mm * opts.gradient_floor_hu_per_mm) as f32,
                momentum: opts.momentum as f32,
            };
            let it = run_level(
                &fixed.levels[level],
                &moving[level],
                u.components_mut(),
                &settings,
                &mut self.scratch,
            );
            iterations += it;
        }
        let inverse = u.inverse_threads(opts.inverse_iterations, opts.threads);
        let (jacobian_min, jacobian_max) = u.jacobian_range_threads(opts.threads);
        let field_max_mm = u.max_norm_mm();
        let inverse_error_mm = u.inverse_error_mm_threads(&inverse, 2, opts.threads);
        let (similarity_ncc, rigid_similarity_ncc) = warped_ncc(
            &fixed.levels[0].data,
            &moving[0],
            u.components_mm(),
            &fixed.core,
            opts.threads,
        );
        let verdict = if field_max_mm > opts.max_field_mm {
            DeformVerdict::Reject(DeformFailure::FieldTooLarge {
                mm: field_max_mm,
                limit_mm: opts.max_field_mm,
            })
        } else if jacobian_min.is_nan() || jacobian_min <= opts.min_jacobian {
            DeformVerdict::Reject(DeformFailure::Folding {
                jacobian_min,
                limit: opts.min_jacobian,
            })
        } else if inverse_error_mm.is_nan() || inverse_error_mm > opts.max_inverse_error_mm {
            DeformVerdict::Reject(DeformFailure::InverseInconsistent {
                mm: inverse_error_mm,
                limit_mm: opts.max_inverse_error_mm,
            })
        } else if !(similarity_ncc >= opts.min_similarity
            && similarity_ncc >= rigid_similarity_ncc - opts.max_similarity_loss)
        {
            DeformVerdict::Reject(DeformFailure::PoorSimilarity {
                value: similarity_ncc,
                rigid: rigid_similarity_ncc,
                limit: opts.min_similarity,
            })
        } else {
            DeformVerdict::Accept
        };
        Ok(DeformableRegistration {
            rigid: *rigid,
            field: u,
            inverse,
            iterations,
            similarity_ncc,
            rigid_similarity_ncc,
            jacobian_min,
            jacobian_max,
            field_max_mm,
            inverse_error_mm,
            verdict,
        })
    }
}

/// NCC over the voxel ranges `core` of the fixed image with the moving image warped by
/// `u`, and with the moving image as it is (the rigid result's): one pass over the core,
/// the warp only where the NCC needs it.
fn warped_ncc(
    fixed: &[f32],
    moving: &LevelImage,
    u: &[Vec<f32>; 3],
    core: &[std::ops::Range<usize>; 3],
    threads: usize,
) -> (f64, f64) {
    let grid = moving.grid;
    let [nx, ny, _] = grid.dims;
    let inv_h = (1.0 / grid.spacing_mm) as f32;
    let kz = core[2].clone();
    // sums of f, f², then per image (warped, rigid): m, m², f·m; and the count
    let parts = demons::par_z_read(threads, kz.len(), |ks| {
        let mut acc = [0f64; 9];
        for k in ks.start + kz.start..ks.end + kz.start {
            for j in core[1].clone() {
                let mut row = [0f64; 8];
                for i in core[0].clone() {
                    let o = (k * ny + j) * nx + i;
                    let p = [
                        i as f32 + u[0][o] * inv_h,
                        j as f32 + u[1][o] * inv_h,
                        k as f32 + u[2][o] * inv_h,
                    ];
                    let w = field::sample_clamped(&moving.data, grid.dims, p);
                    let (f, m, w) = (fixed[o] as f64, moving.data[o] as f64, w as f64);
                    for (r, v) in row.iter_mut().zip([f, f * f, w, w * w, f * w, m, m * m, f * m]) {
                        *r += v;
                    }
                }
                for (a, r) in acc.iter_mut().zip(row) {
                    *a += r;
                }
                acc[8] += core[0].len() as f64;
            }
        }
        acc
    });
    let mut s = [0f64; 9];
    for p in parts {
        for (a, v) in s.iter_mut().zip(p) {
            *a += v;
        }
    }
    let n = s[8];
    let ncc = |sm: f64, smm: f64, sfm: f64| {
        if n < 2.0 {
            return 0.0;
        }
        let cov = sfm - s[0] * sm / n;
        let va = s[1] - s[0] * s[0] / n;
        let vb = smm - sm * sm / n;
        if va <= 0.0 || vb <= 0.0 {
            return 0.0;
        }
        cov / (va * vb).sqrt()
    };
    (ncc(s[2], s[3], s[4]), ncc(s[5], s[6], s[7]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Grid;
    use crate::units::VectorMm;

    /// Ellipsoidal "tumor" in soft tissue inside a bony shell, 1 × 1 × 2 mm voxels.
    fn phantom() -> (CtVolume, MaskVolume) {
        let grid =
            Grid::axis_aligned([80, 80, 40], PointMm::new(-40.0, -40.0, -40.0), [1.0, 1.0, 2.0]).unwrap();
        let mut ct = CtVolume::filled(grid.clone(), -1000);
        let mut mask = MaskVolume::filled(grid.clone(), 0);
        for (o, (v, m)) in ct.as_slice_mut().iter_mut().zip(mask.as_slice_mut()).enumerate() {
            let p = grid.index_to_patient([(o % 80) as f64, ((o / 80) % 80) as f64, (o / 6400) as f64]);
            let body = (p.x * p.x + p.y * p.y) / (36.0 * 36.0) + p.z * p.z / (38.0 * 38.0);
            let t = ((p.x - 3.0).powi(2) + p.y * p.y) / 144.0 + (p.z * p.z) / 196.0;
            let bone = ((p.x + 20.0).powi(2) + (p.y - 15.0).powi(2)) < 25.0;
            *v = if t < 1.0 {
                60
            } else if bone {
                900
            } else if body < 1.0 {
                (-80.0 + 40.0 * (p.x / 7.0).sin() * (p.y / 9.0).cos() + 30.0 * (p.z / 6.0).sin()) as i16
            } else {
                -1000
            };
            *m = u8::from(t < 1.0);
        }
        (ct, mask)
    }

    fn region() -> BoxMm {
        BoxMm::cube(PointMm::new(3.0, 0.0, 0.0), 50.0).unwrap()
    }

    #[test]
    fn an_image_against_itself_gives_the_zero_field() {
        let (ct, mask) = phantom();
        let fixed = DeformFixed::new(&ct, region(), DeformOptions::default()).unwrap();
        let r = DeformableRegistrar::new()
            .register(&fixed, &ct, &RigidTransform::identity(), None)
            .unwrap();
        assert!(r.field_max_mm < 0.01, "{}", r.field_max_mm);
        assert!(r.verdict.is_accept(), "{:?}", r.verdict);
        let t = r.propagate(&mask, ct.grid());
        assert_eq!(t.voxels, mask.as_slice().iter().filter(|&&v| v != 0).count());
    }

    #[test]
    fn a_known_shrink_is_recovered_and_a_folding_field_is_flagged() {
        let (ct, mask) = phantom();
        let c = PointMm::new(3.0, 0.0, 0.0);
        // frame(y) = planning(y + w(y)): a radial field about the tumor that shrinks it
        let w = |y: &PointMm| {
            let d = y - c;
            d * (0.25 * (-d.norm_squared() / (2.0 * 12.0 * 12.0)).exp()) + VectorMm::new(1.0, -0.5, 0.0)
        };
        let grid = ct.grid().clone();
        let mut frame = CtVolume::filled(grid.clone(), -1000);
        for (o, v) in frame.as_slice_mut().iter_mut().enumerate() {
            let y = grid.index_to_patient([(o % 80) as f64, ((o / 80) % 80) as f64, (o / 6400) as f64]);
            *v = ct.sample_linear(&(y + w(&y))).unwrap_or(-1000.0).round() as i16;
        }
        let fixed = DeformFixed::new(&ct, region(), DeformOptions::default()).unwrap();
        let r = DeformableRegistrar::new()
            .register(&fixed, &frame, &RigidTransform::identity(), None)
            .unwrap();
        assert!(r.verdict.is_accept(), "{:?}", r.verdict);
        // truth at the tumor's edge along x: planning x maps to y with y + w(y) = x
        let x = PointMm::new(3.0 + 12.0, 0.0, 0.0);
        let mut y = x;
        for _ in 0..50 {
            y = x - w(&y);
        }
        let err = (r.map_mm(&x) - y).norm();
        assert!(err < 0.5, "edge point off by {err} mm");
        assert!(r.propagate(&mask, &grid).volume_change_pct < -15.0);
        // a field that reverses itself folds and is flagged
        let opts = DeformOptions::default().with_warm_iterations(1);
        let fixed = DeformFixed::new(&ct, region(), opts).unwrap();
        let folding = DisplacementField::from_fn(*fixed.grid(), |p| {
            VectorMm::new(
                -3.0 * (p.x - c.x) * (-(p - c).norm_squared() / 50.0).exp(),
                0.0,
                0.0,
            )
        });
        let r = DeformableRegistrar::new()
            .register(&fixed, &frame, &RigidTransform::identity(), Some(&folding))
            .unwrap();
        assert!(
            matches!(r.verdict, DeformVerdict::Reject(DeformFailure::Folding { .. })),
            "{:?}",
            r.verdict
        );
    }
}
