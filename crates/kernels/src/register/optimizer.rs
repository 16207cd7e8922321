//! Levenberg–Marquardt over the pyramid, and the reusable [`Registrar`].
//!
//! Each iteration solves `(JᵀJ + λ·diag(JᵀJ))·δ = −Jᵀe` for a left-composed increment
//! rotated about the mapped ROI centre (see [`metric`](super::metric)). A step that does not
//! lower the mean squared difference is rejected and `λ` grows; an accepted step shrinks it.
//! A level stops when a step is below both thresholds; only the finest level decides
//! `converged`.

use nalgebra::Rotation3;

use crate::geometry::RigidTransform;
use crate::units::{PointMm, VectorMm};
use crate::volume::{CtVolume, Voxel};

use super::metric::{evaluate, Accum, Samples};
use super::pyramid::{blur_z_at, crop_blur_z_into, downsample_into, step_factors, LevelImage, Z_HALO};
use super::roi::{BoxMm, Roi};
use super::{QualityFailure, RegisterError, RegisterOptions, Registration, Verdict};

/// Fewest planning-CT voxels a region must hold at full resolution.
const MIN_FIXED_SAMPLES: usize = 256;
/// Coarse levels with fewer samples than this are skipped.
const MIN_COARSE_SAMPLES: usize = 128;
/// Extra loosening of the coarse levels' stop thresholds (beyond ×4 per level): a coarse
/// level only has to land inside the next level's capture range, and its last sub-0.1 mm
/// steps at 2 mm voxels cost full-size evaluations the finest level repeats anyway.
const COARSE_STOP_FACTOR: f64 = 2.0;
/// Coarse levels keep at most `max_samples_per_level` divided by this: they only have to
/// land in the next level's capture range, and on a 150 mm region their evaluations (8–12
/// steps at level 1) cost more than the finest level's 3–4 (measured on STS_001, 2026-12-02).
const COARSE_BUDGET_DIVISOR: usize = 2;
/// Fewest overlapping samples for a step to count.
const MIN_OVERLAP_SAMPLES: usize = 64;
/// Fewest samples (inside the frame) for a block of the residual-deformation check to count.
const MIN_BLOCK_SAMPLES: usize = 200;
/// Gauss–Newton steps of a block's translation fit, and the largest step, mm: the residual
/// of a frame the rigid answer describes is a fraction of a millimetre, one that deformed
/// shows millimetres within two or three steps.
const BLOCK_ITERATIONS: u32 = 5;
const BLOCK_MAX_STEP_MM: f64 = 3.0;
/// Least fraction of a block's mean squared difference its own shift must remove to count as
/// a misalignment. Over 16 rigidly moved real-CT frames (20 HU noise) no block's shift
/// removed more than 9%; over 12 deformed ones most removed 20–90%.
const MIN_BLOCK_GAIN: f64 = 0.1;
/// A warm start first runs on a full-resolution subset of this fraction of the finest
/// samples (a sparser lattice), then finishes on all of them: the subset takes the few large
/// steps cheaply, the full set then needs one or two steps to meet the unchanged stop test.
const WARM_PREVIEW_FRACTION: usize = 4;
/// The preview stops at this multiple of the finest level's thresholds.
const WARM_PREVIEW_STOP_FACTOR: f64 = 4.0;

/// When a level's optimizer stops: the step moves the reference point by less than `tol_mm`
/// and turns by less than `tol_deg`. The reference point is the ROI centre on coarse levels,
/// and the tracked target (what drives the beam) on the finest level.
#[derive(Debug, Clone, Copy)]
struct StopTest {
    tol_mm: f64,
    tol_deg: f64,
    target: Option<PointMm>,
}

/// The planning CT side, prepared once per plan: ROI samples on every pyramid level.
#[derive(Debug, Clone)]
pub struct FixedContext {
    /// Index 0 is full resolution.
    levels: Vec<Samples>,
    /// Full resolution, thinned further: the warm start's cheap first pass.
    warm_preview: Samples,
    /// Rotation centre: centroid of the full-resolution ROI voxels, mm.
    centre_mm: PointMm,
    roi: Roi,
    /// The warm preview's samples split into the ROI's octants about the centre, with their
    /// mean positions relative to it: the blocks of the residual-deformation check.
    blocks: Vec<(Samples, [f64; 3])>,
}

impl FixedContext {
    /// Samples `planning` inside `roi` on up to `options.levels` pyramid levels.
    pub fn new(planning: &CtVolume, roi: Roi, options: &RegisterOptions) -> Result<Self, RegisterError> {
        options.validate()?;
        let mut full = in_box(planning.grid(), &roi.box_mm);
        // Slices whose smoothing kernel would run off the series are left out, so every
        // fixed sample is smoothed over real neighbours, like the frame (see `crop_range`).
        let nz = planning.grid().dims()[2];
        if nz > 2 * Z_HALO + 1 {
            full.retain(|v| v[2] >= Z_HALO && v[2] + Z_HALO < nz);
        }
        if full.len() < MIN_FIXED_SAMPLES {
            return Err(RegisterError::RoiOutsideFixed {
                lo_mm: roi.box_mm.lo_mm.coords.into(),
                hi_mm: roi.box_mm.hi_mm.coords.into(),
                voxels: full.len(),
                needed: MIN_FIXED_SAMPLES,
            });
        }
        let grid = planning.grid();
        let sum = full.iter().fold(nalgebra::Vector3::zeros(), |s, ijk| {
            s + grid.index_to_patient(ijk.map(|v| v as f64)).coords
        });
        let centre_mm = PointMm::from(sum / full.len() as f64);
        let finest = samples_of(
            grid,
            planning.as_slice(),
            full.clone(),
            &centre_mm,
            options.max_samples_per_level,
            true,
        );
        let warm_preview = samples_of(
            grid,
            planning.as_slice(),
            full,
            &centre_mm,
            (finest.len() / WARM_PREVIEW_FRACTION).max(MIN_FIXED_SAMPLES),
            true,
        );
        let blocks = warm_preview
            .octants()
            .into_iter()
            .filter(|(b, _)| b.len() >= MIN_BLOCK_SAMPLES)
            .collect();
        let mut levels = vec![finest];
        let mut image = LevelImage {
            grid: grid.clone(),
            data: Vec::new(),
        };
        for level in 1..options.levels {
            let mut next = LevelImage {
                grid: image.grid.clone(),
                data: Vec::new(),
            };
            let factors = step_factors(image.grid.spacing_mm());
            if level == 1 {
                downsample_into(grid, planning.as_slice(), factors, &mut next)?;
            } else {
                downsample_into(&image.grid, &image.data, factors, &mut next)?;
            }
            image = next;
            let idx = in_box(&image.grid, &roi.box_mm);
            if idx.len() < MIN_COARSE_SAMPLES || image.grid.dims().iter().any(|&n| n < 2) {
                break;
            }
            levels.push(samples_of(
                &image.grid,
                &image.data,
                idx,
                &centre_mm,
                options.max_samples_per_level / COARSE_BUDGET_DIVISOR,
                false,
            ));
        }
        Ok(FixedContext {
            levels,
            warm_preview,
            centre_mm,
            roi,
            blocks,
        })
    }

    /// The region and target this context was built for.
    pub fn roi(&self) -> &Roi {
        &self.roi
    }
    /// The rotation centre (centroid of the ROI on the planning CT), mm.
    pub fn centre_mm(&self) -> PointMm {
        self.centre_mm
    }
    /// Pyramid levels available (the coarsest may have been dropped for a small ROI).
    pub fn levels(&self) -> usize {
        self.levels.len()
    }
    /// Fixed samples at full resolution (after thinning to the budget).
    pub fn finest_samples(&self) -> usize {
        self.levels[0].len()
    }
}

/// Voxel indices of `grid` whose centres lie inside `b`.
fn in_box(grid: &crate::geometry::Grid, b: &BoxMm) -> Vec<[usize; 3]> {
    let [nx, ny, nz] = grid.dims();
    let mut out = Vec::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                if b.contains(&grid.index_to_patient([i as f64, j as f64, k as f64])) {
                    out.push([i, j, k]);
                }
            }
        }
    }
    out
}

/// Samples at `idx`, thinned to at most `max` samples on a sheared lattice (see [`Lattice`]).
fn samples_of<T: Voxel>(
    grid: &crate::geometry::Grid,
    data: &[T],
    idx: Vec<[usize; 3]>,
    centre_mm: &PointMm,
    max: usize,
    blur_z: bool,
) -> Samples {
    let lattice = Lattice::within_budget(&idx, max);
    Samples::new(idx.into_iter().filter(|v| lattice.keeps(*v)).map(|v| {
        let rel = grid.index_to_patient(v.map(|x| x as f64)) - centre_mm;
        let value = if blur_z {
            blur_z_at(grid, data, v[0], v[1], v[2])
        } else {
            data[grid.offset(v[0], v[1], v[2])].to_f32()
        };
        ([rel.x as f32, rel.y as f32, rel.z as f32], value)
    }))
}

/// Keeps one voxel in `period`: those with `(i + shear_j·j + shear_k·k) mod period = 0`.
///
/// Why a lattice rather than every s-th column and row: that keeps 1/s² of the voxels, so
/// the sample count jumps by ×2–4 between strides and a large region either blows its time
/// budget or drops far below it; a rank-1 lattice keeps any fraction 1/period, the budget
/// holds to within one period step. The in-plane shear is chosen so the kept voxels of a
/// slice spread evenly (largest nearest-neighbour distance, as a Fibonacci lattice does),
/// and consecutive slices are offset so they do not sample the same columns — a regular
/// grid aligned across slices aliases against anatomy that runs along z (bone, skin).
/// Deterministic: the same plan gives the same samples, hence the same answers.
/// Single voxels rather than runs of 8 along x (which would touch fewer cache lines of a
/// large frame): runs cut a warm 150 mm registration's CPU time a little (3.2–3.8 vs
/// 3.4–5.6 ms over three alternated runs) but cost accuracy, adjacent voxels carrying much
/// the same information (72 real-CT cases: 68 vs 72 within 0.2 mm, mean 0.080 vs 0.072 mm;
/// 2026-12-02).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Lattice {
    period: usize,
    shear_j: usize,
    shear_k: usize,
}

impl Lattice {
    /// The densest lattice whose kept voxels among `idx` number at most `max` (all of them
    /// when they fit).
    fn within_budget(idx: &[[usize; 3]], max: usize) -> Self {
        let max = max.max(1);
        let mut period = idx.len().div_ceil(max).max(1);
        loop {
            let lattice = Lattice::with_period(period);
            if period == 1 || idx.iter().filter(|v| lattice.keeps(**v)).count() <= max {
                return lattice;
            }
            period += 1;
        }
    }

    fn with_period(period: usize) -> Self {
        if period <= 1 {
            return Lattice {
                period: 1,
                shear_j: 0,
                shear_k: 0,
            };
        }
        // the in-plane shear whose lattice has the longest shortest vector; the shortest
        // vector of a lattice of density 1/period is below 1.08·√period, so a small search
        // window finds it
        let reach = ((period as f64).sqrt() * 1.5).ceil() as i64 + 1;
        let p = period as i64;
        let shortest = |c: i64| {
            let mut best = i64::MAX;
            for b in 0..=reach {
                for a in -reach..=reach {
                    if (a, b) != (0, 0) && (a + c * b).rem_euclid(p) == 0 {
                        best = best.min(a * a + b * b);
                    }
                }
            }
            best
        };
        let shear_j = (1..p).max_by_key(|&c| (shortest(c), -c)).unwrap_or(1) as usize;
        // slices offset by about 0.38 of the period (golden section): neighbouring slices'
        // samples fall between each other's
        let shear_k = ((period as f64 * 0.381_966).round() as usize).max(1);
        Lattice {
            period,
            shear_j,
            shear_k,
        }
    }

    #[inline]
    fn keeps(&self, v: [usize; 3]) -> bool {
        (v[0] + self.shear_j * v[1] + self.shear_k * v[2]) % self.period == 0
    }
}

/// Outcome of one level.
struct LevelRun {
    transform: RigidTransform,
    iterations: u32,
    converged: bool,
    /// The last evaluation at an accepted transform.
    last: Accum,
}

/// Registers frames against a [`FixedContext`], reusing its pyramid buffers frame to frame.
#[derive(Debug, Clone)]
pub struct Registrar {
    options: RegisterOptions,
    /// `moving[l - 1]` is pyramid level `l` of the current frame.
    moving: Vec<LevelImage>,
}

impl Registrar {
    /// A registrar with these options (checked again by every registration).
    pub fn new(options: RegisterOptions) -> Self {
        Registrar {
            options,
            moving: Vec::new(),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &RegisterOptions {
        &self.options
    }

    /// Cold registration over the whole pyramid, starting from `initial`.
    pub fn register(
        &mut self,
        fixed: &FixedContext,
        moving: &CtVolume,
        initial: &RigidTransform,
    ) -> Result<Registration, RegisterError> {
        self.run(
            fixed,
            moving,
            initial,
            self.options.levels,
            self.options.cold_search_mm,
        )
    }

    /// Warm registration from the previous frame's answer: only the finest
    /// `options.warm_levels` levels, so a small motion costs a few full-resolution steps.
    /// With one level, a pass over a quarter of the finest samples takes the large steps
    /// first; the full set then finishes under the same stop test as a cold run.
    pub fn register_warm(
        &mut self,
        fixed: &FixedContext,
        moving: &CtVolume,
        previous: &RigidTransform,
    ) -> Result<Registration, RegisterError> {
        self.run(
            fixed,
            moving,
            previous,
            self.options.warm_levels,
            self.options.warm_search_mm,
        )
    }

    fn run(
        &mut self,
        fixed: &FixedContext,
        moving: &CtVolume,
        initial: &RigidTransform,
        levels: usize,
        search_mm: f64,
    ) -> Result<Registration, RegisterError> {
        let o = self.options.clone();
        o.validate()?;
        let m = initial.matrix();
        if let Some(o) = m.iter().position(|v| !v.is_finite()) {
            // nalgebra stores column-major
            return Err(RegisterError::BadInitial {
                row: o % 4,
                col: o / 4,
            });
        }
        let n_levels = levels.clamp(1, fixed.levels.len());
        let crop = crop_range(fixed, moving, initial, search_mm);
        // a small crop (frame far from the ROI) may not coarsen: use the levels it has
        let n_levels = self.build_moving_pyramid(moving, crop, n_levels)?;

        let centre = fixed.centre_mm;
        let mut t = *initial;
        let mut iterations = 0;
        let mut converged = false;
        let mut last = Accum::default();
        if n_levels == 1 && fixed.warm_preview.len() < fixed.levels[0].len() {
            let preview = self.optimise_level(
                &fixed.warm_preview,
                &self.moving[0],
                &centre,
                t,
                StopTest {
                    tol_mm: o.min_step_mm * WARM_PREVIEW_STOP_FACTOR,
                    tol_deg: o.finest_min_step_deg * WARM_PREVIEW_STOP_FACTOR,
                    target: Some(fixed.roi.target_mm),
                },
            );
            // A preview that failed (e.g. no overlap) leaves the start as it was; the full
            // pass below decides the verdict either way.
            if preview.converged {
                t = preview.transform;
            }
            iterations += preview.iterations;
        }
        for level in (0..n_levels).rev() {
            let image = &self.moving[level];
            // coarse levels only need to land in the finer level's capture range
            let scale = if level == 0 {
                1.0
            } else {
                COARSE_STOP_FACTOR * (1u32 << (2 * level)) as f64
            };
            let stop = if level == 0 {
                StopTest {
                    tol_mm: o.min_step_mm,
                    tol_deg: o.finest_min_step_deg,
                    target: Some(fixed.roi.target_mm),
                }
            } else {
                StopTest {
                    tol_mm: o.min_step_mm * scale,
                    tol_deg: o.min_step_deg * scale,
                    target: None,
                }
            };
            let run = self.optimise_level(&fixed.levels[level], image, &centre, t, stop);
            t = run.transform;
            iterations += run.iterations;
            converged = run.converged;
            last = run.last;
        }

        // The last evaluation was at the transform before the final sub-threshold step: its
        // similarity and overlap stand for the answer without another pass.
        let finest = &fixed.levels[0];
        let acc = last;
        let overlap_fraction = acc.n as f64 / finest.len() as f64;
        let similarity_ncc = acc.ncc();
        let rms_hu = acc.mse().sqrt();
        let jump = t.compose(&initial.inverse());
        let jump_mm = (t.apply(&centre) - initial.apply(&centre)).norm();
        let jump_deg = jump.angle_deg();
        let verdict = if overlap_fraction < o.min_overlap {
            Verdict::Reject(QualityFailure::InsufficientOverlap {
                fraction: overlap_fraction,
                limit: o.min_overlap,
            })
        } else if !converged {
            Verdict::Reject(QualityFailure::NotConverged { iterations })
        } else if similarity_ncc.is_nan() || similarity_ncc < o.min_similarity {
            Verdict::Reject(QualityFailure::PoorSimilarity {
                value: similarity_ncc,
                limit: o.min_similarity,
            })
        } else if jump_mm > o.max_jump_mm || jump_deg > o.max_jump_deg {
            Verdict::Reject(QualityFailure::Jump {
                mm: jump_mm,
                deg: jump_deg,
                limit_mm: o.max_jump_mm,
                limit_deg: o.max_jump_deg,
            })
        } else {
            Verdict::Accept
        };
        // Only an answer that passed every other check is worth the residual check's cost.
        let (residual_mm, residual_block) = if verdict.is_accept() && o.max_residual_mm.is_finite() {
            self.block_residual_mm(fixed, &t)
        } else {
            (f64::NAN, None)
        };
        let verdict = match residual_block {
            Some(at) if residual_mm > o.max_residual_mm => {
                Verdict::Reject(QualityFailure::ResidualDeformation {
                    mm: residual_mm,
                    limit_mm: o.max_residual_mm,
                    block_centre_mm: [at.x, at.y, at.z],
                })
            }
            _ => verdict,
        };
        let planned = fixed.roi.target_mm;
        let target = t.apply(&planned);
        Ok(Registration {
            transform: t,
            converged,
            iterations,
            similarity_ncc,
            rms_hu,
            overlap_fraction,
            verdict,
            residual_mm,
            target_planned_mm: planned,
            target_mm: target,
            tumor_shift_mm: target - planned,
        })
    }

    /// Fills `self.moving[0..n]` with the cropped, slice-smoothed frame and its coarser
    /// levels, reusing the buffers; `n ≤ n_levels` stops before a level under two voxels.
    fn build_moving_pyramid(
        &mut self,
        moving: &CtVolume,
        crop: ([usize; 3], [usize; 3]),
        n_levels: usize,
    ) -> Result<usize, RegisterError> {
        let check = |dims: [usize; 3], level| {
            if dims.iter().any(|&n| n < 2) {
                Err(RegisterError::MovingTooSmall { dims, level })
            } else {
                Ok(())
            }
        };
        check(moving.grid().dims(), 0)?;
        while self.moving.len() < n_levels {
            self.moving.push(LevelImage {
                grid: moving.grid().clone(),
                data: Vec::new(),
            });
        }
        crop_blur_z_into(
            moving.grid(),
            moving.as_slice(),
            crop.0,
            crop.1,
            &mut self.moving[0],
            self.options.threads,
        )?;
        for level in 1..n_levels {
            let (done, rest) = self.moving.split_at_mut(level);
            let prev = &done[level - 1];
            downsample_into(
                &prev.grid,
                &prev.data,
                step_factors(prev.grid.spacing_mm()),
                &mut rest[0],
            )?;
            if rest[0].grid.dims().iter().any(|&n| n < 2) {
                return Ok(level);
            }
        }
        Ok(n_levels)
    }

    /// The residual-deformation check: each block of the ROI (octant about its centre) gets
    /// its own translation on top of `t`, fitted by Gauss–Newton on the same metric over
    /// the block's samples in the finest moving level; returns the largest block translation,
    /// mm, and that block's centre in the planning CT (NaN, `None`: no block overlapped the
    /// frame enough to tell).
    ///
    /// A frame the rigid answer describes leaves every block where it is, within the noise;
    /// a deformed one (a tumor that shrank, lung that moved unevenly) leaves blocks whose
    /// content sits elsewhere — what a rigid answer cannot correct.
    fn block_residual_mm(&self, fixed: &FixedContext, t: &RigidTransform) -> (f64, Option<PointMm>) {
        let image = &self.moving[0];
        let centre = fixed.centre_mm;
        let threads = self.options.threads;
        let (mut worst, mut at) = (f64::NAN, None);
        for (samples, mean) in &fixed.blocks {
            let mut total = VectorMm::zeros();
            let mut counted = true;
            let (mut mse0, mut mse1) = (f64::NAN, f64::NAN);
            for _ in 0..BLOCK_ITERATIONS {
                let mut tb = *t;
                tb.translation_mm += total;
                let acc = evaluate(samples, &image.data, &image.grid, &tb, &centre, threads);
                if acc.n < MIN_BLOCK_SAMPLES {
                    counted = false;
                    break;
                }
                if mse0.is_nan() {
                    mse0 = acc.mse();
                }
                mse1 = acc.mse();
                let (h, g) = acc.normal_equations();
                let mut a = h.fixed_view::<3, 3>(3, 3).into_owned();
                for d in 0..3 {
                    a[(d, d)] *= 1.0 + 1e-3;
                }
                let Some(chol) = a.cholesky() else {
                    counted = false;
                    break;
                };
                let mut step = -chol.solve(&g.fixed_rows::<3>(3).into_owned());
                if !step.iter().all(|v| v.is_finite()) {
                    counted = false;
                    break;
                }
                let n = step.norm();
                if n > BLOCK_MAX_STEP_MM {
                    step *= BLOCK_MAX_STEP_MM / n;
                }
                total += step;
                if n < 0.02 {
                    break;
                }
            }
            // A block whose own shift explains little of its mismatch is noise or featureless
            // tissue: its shift is not a measured misalignment.
            let significant = counted && mse1 <= (1.0 - MIN_BLOCK_GAIN) * mse0;
            if counted && at.is_none() {
                worst = 0.0;
            }
            if significant {
                let r = total.norm();
                if at.is_none() || r > worst {
                    worst = r;
                    at = Some(centre + VectorMm::from(*mean));
                }
            }
        }
        (worst, at)
    }

    fn optimise_level(
        &self,
        samples: &Samples,
        image: &LevelImage,
        centre: &PointMm,
        start: RigidTransform,
        stop: StopTest,
    ) -> LevelRun {
        let threads = self.options.threads;
        let mut t = start;
        let mut acc = evaluate(samples, &image.data, &image.grid, &t, centre, threads);
        let give_up = |t, iterations, last| LevelRun {
            transform: t,
            iterations,
            converged: false,
            last,
        };
        if acc.n < MIN_OVERLAP_SAMPLES {
            return give_up(t, 0, acc);
        }
        let mut lambda = 1e-3;
        for it in 1..=self.options.max_iterations_per_level {
            let (h, g) = acc.normal_equations();
            let mut a = h;
            for d in 0..6 {
                a[(d, d)] += lambda * h[(d, d)];
            }
            let Some(chol) = a.cholesky() else {
                return give_up(t, it, acc);
            };
            let delta = -chol.solve(&g);
            if !delta.iter().all(|v| v.is_finite()) {
                return give_up(t, it, acc);
            }
            let dw = delta.fixed_rows::<3>(0).into_owned();
            let dt = delta.fixed_rows::<3>(3).into_owned();
            let step = RigidTransform::about_center(Rotation3::new(dw), t.apply(centre), dt);
            let candidate = step.compose(&t);
            // what the step moves: the ROI centre, or (finest level) the tracked target
            let moved_mm = match stop.target {
                None => dt.norm(),
                Some(p) => (candidate.apply(&p) - t.apply(&p)).norm(),
            };
            if moved_mm < stop.tol_mm && dw.norm().to_degrees() < stop.tol_deg {
                return LevelRun {
                    transform: candidate,
                    iterations: it,
                    converged: true,
                    last: acc,
                };
            }
            let next = evaluate(samples, &image.data, &image.grid, &candidate, centre, threads);
            if next.n >= MIN_OVERLAP_SAMPLES && next.mse() <= acc.mse() {
                t = candidate;
                acc = next;
                lambda = (lambda * 0.25).max(1e-7);
            } else {
                lambda *= 8.0;
                if lambda > 1e8 {
                    return give_up(t, it, acc);
                }
            }
        }
        give_up(t, self.options.max_iterations_per_level, acc)
    }
}

/// Index range `(lo, hi exclusive)` of the frame that the ROI, mapped by `initial`, can reach
/// within `search_mm`; at least two voxels per axis so an empty overlap still yields a
/// (failing) registration rather than an error. The outer `Z_HALO` slices of the frame are
/// left out (when it has enough): their smoothing would repeat the edge slice, which the
/// anatomy beyond a slab's edge does not, and would bias a slab towards its edges.
fn crop_range(
    fixed: &FixedContext,
    moving: &CtVolume,
    initial: &RigidTransform,
    search_mm: f64,
) -> ([usize; 3], [usize; 3]) {
    let g = moving.grid();
    let dims = g.dims();
    let b = &fixed.roi.box_mm;
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for c in 0..8 {
        let p = PointMm::new(
            if c & 1 != 0 { b.hi_mm.x } else { b.lo_mm.x },
            if c & 2 != 0 { b.hi_mm.y } else { b.lo_mm.y },
            if c & 4 != 0 { b.hi_mm.z } else { b.lo_mm.z },
        );
        let u = g.patient_to_index(&initial.apply(&p));
        for a in 0..3 {
            lo[a] = lo[a].min(u[a]);
            hi[a] = hi[a].max(u[a]);
        }
    }
    let spacing = g.spacing_mm();
    let mut out_lo = [0usize; 3];
    let mut out_hi = [0usize; 3];
    for a in 0..3 {
        let halo = if a == 2 && dims[2] > 2 * Z_HALO + 2 {
            Z_HALO as f64
        } else {
            0.0
        };
        let n = dims[a] as f64;
        let m = search_mm / spacing[a] + 1.0;
        let l = (lo[a] - m).floor().clamp(halo, n - 2.0 - halo);
        let h = (hi[a] + m).ceil().clamp(l + 1.0, n - 1.0 - halo);
        out_lo[a] = l as usize;
        out_hi[a] = h as usize + 1;
    }
    (out_lo, out_hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: [usize; 3]) -> Vec<[usize; 3]> {
        let mut v = Vec::new();
        for k in 0..n[2] {
            for j in 0..n[1] {
                for i in 0..n[0] {
                    v.push([i, j, k]);
                }
            }
        }
        v
    }

    #[test]
    fn lattice_fills_the_budget_without_exceeding_it() {
        // a 150 mm region at 0.977 × 0.977 × 3.27 mm
        let idx = block([154, 154, 46]);
        for max in [48_000, 24_000, 100_000, 7_000] {
            let l = Lattice::within_budget(&idx, max);
            let kept = idx.iter().filter(|v| l.keeps(**v)).count();
            assert!(kept <= max, "{kept} > {max}");
            assert!(kept * 10 >= max * 9, "only {kept} of a budget of {max}");
            assert!((kept as f64 * l.period as f64 / idx.len() as f64 - 1.0).abs() < 0.01);
        }
        // a region inside the budget keeps every voxel
        let small = block([40, 40, 20]);
        let l = Lattice::within_budget(&small, 48_000);
        assert_eq!(small.iter().filter(|v| l.keeps(**v)).count(), small.len());
    }

    #[test]
    fn lattice_spreads_samples_in_plane_and_staggers_slices() {
        for period in [2, 3, 5, 7, 23, 47] {
            let l = Lattice::with_period(period);
            let kept: Vec<(i64, i64)> = (0..60)
                .flat_map(|j| (0..60).map(move |i| (i, j)))
                .filter(|&(i, j)| l.keeps([i as usize, j as usize, 0]))
                .collect();
            // nearest neighbour distance within a slice: a lattice of density 1/period can
            // reach 1.07·√period (hexagonal); every-s-th-column thinning has 1.0·√period
            let mut nearest = f64::INFINITY;
            for (n, a) in kept.iter().enumerate() {
                for b in &kept[n + 1..] {
                    let d = (((a.0 - b.0).pow(2) + (a.1 - b.1).pow(2)) as f64).sqrt();
                    nearest = nearest.min(d);
                }
            }
            assert!(
                nearest >= 0.8 * (period as f64).sqrt(),
                "period {period}: nearest {nearest}"
            );
            // neighbouring slices never sample the same column
            for &(i, j) in &kept {
                assert!(
                    !l.keeps([i as usize, j as usize, 1]),
                    "period {period}: ({i}, {j})"
                );
            }
        }
    }
}
