//! Rigid registration of an in-room frame against the planning CT.
//!
//! # Convention
//!
//! The result is a [`RigidTransform`] `T` that maps a point of the planning CT (fixed) to
//! the same anatomical point in the frame (moving) — ITK's convention. It minimises the mean
//! squared HU difference over the fixed region of interest:
//!
//! ```text
//! metric(T) = mean over fixed ROI samples x with T(x) inside the frame of (M(T(x)) − F(x))²
//! ```
//!
//! so the target planned at `p` in the planning CT sits at `T(p)` in the frame, and the
//! tumor shift is `T(p) − p` in patient (LPS) mm.
//!
//! # Method
//!
//! - Region: a patient-space box, or a target mask's bounding box plus a margin (default
//!   20 mm), see [`roi`]. The frame may cover only part of it (a slab); samples mapped outside
//!   the frame do not count and the overlap fraction is tracked.
//! - Pyramid ([`pyramid`]): block averages that coarsen the in-plane axes before the 3.27 mm
//!   slice axis; four levels by default (down to ≈ 8 × 8 × 6.5 mm). Fixed samples are built once per plan
//!   ([`FixedContext`]); the frame's pyramid goes into buffers the [`Registrar`] reuses.
//! - Metric ([`metric`]): mean squared difference with the exact gradient of the trilinear
//!   interpolant. SSD rather than NCC: frame and planning CT are the same modality and
//!   calibrated in HU, and SSD gives Gauss–Newton a plain least-squares problem. NCC is still
//!   computed over the finest level as the interpretable similarity in the result.
//! - Optimizer ([`optimizer`]): Levenberg–Marquardt on a left-composed increment rotated
//!   about the mapped ROI centre (rotation about the ROI, not the patient origin, keeps the six
//!   parameters decoupled). A level stops when a step is below the thresholds in mm and
//!   degrees (scaled by the level's coarsening).
//! - Quality: a [`Verdict`] that names the first failed check, in the order insufficient
//!   overlap, not converged, poor similarity, jump from the initial guess, residual
//!   deformation. The last looks inside the region after the rigid fit: each octant of the
//!   region (about its centroid, on the warm preview's thinned samples) gets its own
//!   translation on top of the rigid answer (Gauss–Newton on the same metric, ≤ 5 steps);
//!   if one needs more than [`RegisterOptions::max_residual_mm`], no rigid answer describes
//!   the frame — the anatomy deformed or the tumor changed size — and the result is
//!   rejected rather than driving the beam with a wrong shift.
//!
//! Kernels know nothing of the runtime: [`Registrar::register`] runs on the caller's thread,
//! except that [`RegisterOptions::with_threads`] lets it split the per-sample sums over
//! scoped threads.
//!
//! ```
//! use ionguide_core::geometry::{Grid, RigidTransform};
//! use ionguide_kernels::register::{resample, BoxMm, FixedContext, Registrar, RegisterOptions, Roi};
//! use ionguide_core::units::{PointMm, VectorMm};
//! use ionguide_core::volume::CtVolume;
//! // a blob phantom, and a frame showing it moved by 1.5 mm along x
//! let grid = Grid::axis_aligned([48, 48, 16], PointMm::new(-24.0, -24.0, -24.0), [1.0, 1.0, 3.0]).unwrap();
//! let mut planning = CtVolume::filled(grid.clone(), -1000);
//! for (o, v) in planning.as_slice_mut().iter_mut().enumerate() {
//!     let p = grid.index_to_patient([(o % 48) as f64, ((o / 48) % 48) as f64, (o / 2304) as f64]);
//!     let r = (p.x * p.x / 200.0 + p.y * p.y / 120.0 + p.z * p.z / 300.0).sqrt();
//!     *v = if r < 1.0 { 40 } else if r < 1.4 { 400 } else { -1000 };
//! }
//! let truth = RigidTransform::from_rotation_vector(VectorMm::zeros(), VectorMm::new(1.5, 0.0, 0.0));
//! let frame = resample(&planning, &truth.inverse(), &grid, -1000);
//! let options = RegisterOptions::default();
//! let roi = Roi::from_box(BoxMm::cube(PointMm::origin(), 36.0).unwrap());
//! let fixed = FixedContext::new(&planning, roi, &options).unwrap();
//! let mut registrar = Registrar::new(options);
//! let result = registrar.register(&fixed, &frame, &RigidTransform::identity()).unwrap();
//! assert!(result.verdict.is_accept());
//! assert!((result.tumor_shift_mm.x - 1.5).abs() < 0.1);
//! ```

pub mod deform;
pub mod metric;
pub mod optimizer;
pub mod pyramid;
pub mod resample;
pub mod roi;

pub use deform::{
    DeformFixed, DeformOptions, DeformVerdict, DeformableRegistrar, DeformableRegistration,
    DisplacementField, FieldGrid, PropagatedTarget,
};
pub use optimizer::{FixedContext, Registrar};
pub use resample::resample;
pub use roi::{BoxMm, Roi, DEFAULT_MARGIN_MM};

use crate::geometry::{GeometryError, RigidTransform};
use crate::units::{PointMm, VectorMm};

/// Why a registration could not be attempted (as opposed to a poor result, see [`Verdict`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A box with non-finite corners or no volume.
    #[error("region box is empty or not finite: corners {lo_mm:?} and {hi_mm:?} mm")]
    EmptyBox {
        /// First corner given.
        lo_mm: [f64; 3],
        /// Second corner given.
        hi_mm: [f64; 3],
    },
    /// The target mask has no voxel set.
    #[error("target mask has no voxel set")]
    EmptyMask,
    /// A negative or non-finite margin.
    #[error("ROI margin must be finite and >= 0 mm, got {margin_mm}")]
    BadMargin {
        /// The margin given.
        margin_mm: f64,
    },
    /// Too few planning-CT voxels inside the region.
    #[error("region {lo_mm:?}..{hi_mm:?} mm holds {voxels} planning-CT voxels, need at least {needed}; does the box lie on the planning CT?")]
    RoiOutsideFixed {
        /// Lower corner.
        lo_mm: [f64; 3],
        /// Upper corner.
        hi_mm: [f64; 3],
        /// Voxels found.
        voxels: usize,
        /// Voxels required.
        needed: usize,
    },
    /// A frame with fewer than two voxels along some axis at a pyramid level.
    #[error("frame of {dims:?} voxels is too small at pyramid level {level} (need >= 2 per axis)")]
    MovingTooSmall {
        /// Dimensions at that level.
        dims: [usize; 3],
        /// Pyramid level (0 = full resolution).
        level: usize,
    },
    /// The initial transform has a non-finite entry.
    #[error("initial transform has a non-finite entry at row {row}, column {col} of its 4×4 matrix")]
    BadInitial {
        /// Row of the first bad entry.
        row: usize,
        /// Column of the first bad entry.
        col: usize,
    },
    /// An option is out of range.
    #[error("registration option {name} = {value} is out of range")]
    BadOption {
        /// Option name.
        name: &'static str,
        /// Value given.
        value: f64,
    },
    /// A coarse grid could not be built.
    #[error("pyramid grid is invalid")]
    Geometry {
        /// The geometry error.
        #[source]
        source: GeometryError,
    },
}

/// Registration settings and quality limits.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RegisterOptions {
    /// Pyramid levels for a cold start (1 = full resolution only).
    pub levels: usize,
    /// Finest levels used by [`Registrar::register_warm`].
    pub warm_levels: usize,
    /// Iteration cap per level.
    pub max_iterations_per_level: u32,
    /// A level stops when a step moves the ROI centre (on the finest level: the target) less
    /// than this, mm (×4 per coarser level, and ×2 more on every coarse level: those only need
    /// to land in the next level's capture range)…
    pub min_step_mm: f64,
    /// …and rotates less than this, degrees (coarse levels, scaled the same way).
    pub min_step_deg: f64,
    /// The finest level (of a cold or a warm run) stops when a step moves the tracked target
    /// less than `min_step_mm` and rotates less than this, degrees. Looser than
    /// `min_step_deg`: the target's position is what drives the beam, and on breathing
    /// (non-rigid) anatomy the best rigid rotation of the whole ROI drifts along a flat valley
    /// for tens of steps while the target stays put.
    pub finest_min_step_deg: f64,
    /// Most fixed samples on the finest level (coarse levels: half of it): a larger region
    /// is thinned on an even lattice to this budget, so a 150 mm region costs about what an
    /// 80 mm one does. Accuracy holds: over 72 real-CT cases (STS_001–004, target-mask
    /// regions of 78–213 mm and 150 mm cubes, a third of them slabs) the mean target error
    /// was 0.072 mm with this budget (all 72 within 0.2 mm), 0.073 mm with the former
    /// in-plane stride to 160,000 samples (71 of 72), 0.077 mm with 32,000 (71 of 72)
    /// (2026-12-02). A warm run's time goes with the samples: on the bench's 150 mm region,
    /// ~2 ms at 16,000, ~4 ms at 40,000, ~5 ms at 62,000 (thread CPU time).
    pub max_samples_per_level: usize,
    /// Scoped threads for the per-sample sums (1 = the caller's thread only).
    pub threads: usize,
    /// Cold start: the frame is cropped to the ROI mapped by the initial guess plus this, mm.
    pub cold_search_mm: f64,
    /// Warm start: the same crop margin, mm (the previous answer is close).
    pub warm_search_mm: f64,
    /// Lowest acceptable NCC over the ROI.
    pub min_similarity: f64,
    /// Lowest acceptable fraction of ROI samples inside the frame.
    pub min_overlap: f64,
    /// Largest acceptable move of the ROI centre from the initial guess, mm.
    pub max_jump_mm: f64,
    /// Largest acceptable rotation from the initial guess, degrees.
    pub max_jump_deg: f64,
    /// Largest acceptable residual misalignment of a part of the region after the rigid fit,
    /// mm: the ROI's octants each get their own translation on top of the answer, and the
    /// largest must stay within this (infinite: not checked). See
    /// [`QualityFailure::ResidualDeformation`].
    pub max_residual_mm: f64,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            levels: 4,
            warm_levels: 1,
            max_iterations_per_level: 40,
            min_step_mm: 0.01,
            min_step_deg: 0.01,
            finest_min_step_deg: 0.25,
            max_samples_per_level: 40_000,
            threads: 1,
            cold_search_mm: 30.0,
            warm_search_mm: 12.0,
            min_similarity: 0.85,
            min_overlap: 0.2,
            max_jump_mm: 30.0,
            max_jump_deg: 6.0,
            max_residual_mm: 1.5,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $field:ident: $ty:ty;)*) => {
        impl RegisterOptions {
            $($(#[$doc])* pub fn $name(mut self, v: $ty) -> Self { self.$field = v; self })*
        }
    };
}
setters! {
    /// Sets [`RegisterOptions::levels`].
    with_levels: levels: usize;
    /// Sets [`RegisterOptions::warm_levels`].
    with_warm_levels: warm_levels: usize;
    /// Sets [`RegisterOptions::max_iterations_per_level`].
    with_max_iterations_per_level: max_iterations_per_level: u32;
    /// Sets [`RegisterOptions::min_step_mm`].
    with_min_step_mm: min_step_mm: f64;
    /// Sets [`RegisterOptions::min_step_deg`].
    with_min_step_deg: min_step_deg: f64;
    /// Sets [`RegisterOptions::finest_min_step_deg`].
    with_finest_min_step_deg: finest_min_step_deg: f64;
    /// Sets [`RegisterOptions::max_samples_per_level`].
    with_max_samples_per_level: max_samples_per_level: usize;
    /// Sets [`RegisterOptions::threads`].
    with_threads: threads: usize;
    /// Sets [`RegisterOptions::cold_search_mm`].
    with_cold_search_mm: cold_search_mm: f64;
    /// Sets [`RegisterOptions::warm_search_mm`].
    with_warm_search_mm: warm_search_mm: f64;
    /// Sets [`RegisterOptions::min_similarity`].
    with_min_similarity: min_similarity: f64;
    /// Sets [`RegisterOptions::min_overlap`].
    with_min_overlap: min_overlap: f64;
    /// Sets [`RegisterOptions::max_jump_mm`].
    with_max_jump_mm: max_jump_mm: f64;
    /// Sets [`RegisterOptions::max_jump_deg`].
    with_max_jump_deg: max_jump_deg: f64;
    /// Sets [`RegisterOptions::max_residual_mm`].
    with_max_residual_mm: max_residual_mm: f64;
}

impl RegisterOptions {
    /// Checks ranges; called by [`FixedContext::new`] and [`Registrar::new`] users' entry points.
    pub fn validate(&self) -> Result<(), RegisterError> {
        let bad = |name, value: f64| Err(RegisterError::BadOption { name, value });
        if self.levels == 0 || self.levels > 6 {
            return bad("levels", self.levels as f64);
        }
        if self.warm_levels == 0 {
            return bad("warm_levels", 0.0);
        }
        if self.max_iterations_per_level == 0 {
            return bad("max_iterations_per_level", 0.0);
        }
        if self.max_samples_per_level < 64 {
            return bad("max_samples_per_level", self.max_samples_per_level as f64);
        }
        for (name, v) in [
            ("min_step_mm", self.min_step_mm),
            ("min_step_deg", self.min_step_deg),
            ("finest_min_step_deg", self.finest_min_step_deg),
            ("max_jump_mm", self.max_jump_mm),
            ("max_jump_deg", self.max_jump_deg),
            ("cold_search_mm", self.cold_search_mm),
            ("warm_search_mm", self.warm_search_mm),
            ("max_residual_mm", self.max_residual_mm),
        ] {
            // NaN fails both; only the residual check may be switched off by ∞
            let ok = v > 0.0 && (v.is_finite() || name == "max_residual_mm");
            if !ok {
                return bad(name, v);
            }
        }
        for (name, v) in [
            ("min_similarity", self.min_similarity),
            ("min_overlap", self.min_overlap),
        ] {
            if !(-1.0..=1.0).contains(&v) {
                return bad(name, v);
            }
        }
        Ok(())
    }
}

/// Why a registration result must not be used.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum QualityFailure {
    /// Too few ROI samples fall inside the frame.
    InsufficientOverlap {
        /// Fraction of finest-level ROI samples inside the frame.
        fraction: f64,
        /// Required fraction.
        limit: f64,
    },
    /// The finest level hit its iteration cap (or the normal equations were singular).
    NotConverged {
        /// Iterations used in total.
        iterations: u32,
    },
    /// The aligned images do not look alike.
    PoorSimilarity {
        /// NCC over the ROI.
        value: f64,
        /// Required NCC.
        limit: f64,
    },
    /// The answer moved too far from the initial guess.
    Jump {
        /// Move of the mapped ROI centre, mm.
        mm: f64,
        /// Rotation, degrees.
        deg: f64,
        /// Limit, mm.
        limit_mm: f64,
        /// Limit, degrees.
        limit_deg: f64,
    },
    /// After the rigid fit, a part of the region is still misaligned: no rigid answer
    /// describes the frame (the anatomy deformed, the tumor shrank or grew). Checked last.
    ResidualDeformation {
        /// Largest translation an octant of the region needed on top of the rigid answer, mm.
        mm: f64,
        /// Limit, mm.
        limit_mm: f64,
        /// Centre of that octant in the planning CT, patient mm.
        block_centre_mm: [f64; 3],
    },
}

/// The quality verdict of one registration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Every check passed.
    Accept,
    /// The first check that failed.
    Reject(QualityFailure),
}

impl Verdict {
    /// Whether every check passed.
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept)
    }
}

/// One registration result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Registration {
    /// Planning CT (fixed) → frame (moving).
    pub transform: RigidTransform,
    /// The finest level stopped on a small step rather than its iteration cap.
    pub converged: bool,
    /// Optimizer iterations over all levels (accepted and rejected steps).
    pub iterations: u32,
    /// NCC of fixed and moved frame over the finest-level ROI samples.
    pub similarity_ncc: f64,
    /// Root-mean-square HU difference over the same samples.
    pub rms_hu: f64,
    /// Fraction of finest-level ROI samples that map inside the frame.
    pub overlap_fraction: f64,
    /// The quality verdict.
    pub verdict: Verdict,
    /// Largest residual misalignment of an octant of the region after the rigid fit, mm
    /// (NaN: not measured — the check is off, or an earlier check failed).
    pub residual_mm: f64,
    /// Planned target position in the planning CT, mm.
    pub target_planned_mm: PointMm,
    /// The target carried into the frame, `T(planned)`, mm.
    pub target_mm: PointMm,
    /// `target_mm − target_planned_mm`, patient mm.
    pub tumor_shift_mm: VectorMm,
}

impl Registration {
    /// Whether the result may drive the beam: converged and every quality check passed.
    pub fn is_usable(&self) -> bool {
        self.converged && self.verdict.is_accept()
    }
    /// Translation of the transform (about the patient origin), mm.
    pub fn translation_mm(&self) -> VectorMm {
        self.transform.translation_mm
    }
    /// Rotation as x-y-z angles, degrees (see [`RigidTransform::rotation_xyz_deg`]).
    pub fn rotation_xyz_deg(&self) -> [f64; 3] {
        self.transform.rotation_xyz_deg()
    }
}
