//! A plan's dose on a grid: rays traced once through the CT by the range engine's
//! [`SpotTracer`], the dose-grid voxels near each ray gathered once with their
//! water-equivalent depth and radial distance, then every spot of that ray added from that
//! list.

use super::delivered::{DoseEngine, EnergyMatch};
use super::machine::IonMachine;
use super::pencil::{radial_bin, Near, PencilKernel, Plane, LANES, RADIAL_BINS};
use super::DoseError;
use crate::geometry::Grid;
use crate::plan::IonPlan;
use crate::range::{Hlut, SpotTracer};
use crate::units::PointMm;
use crate::volume::{CtVolume, Volume};

/// What a plan's Scan Spot Meterset Weights count.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SpotWeightUnit {
    /// Number of particles (DICOM Primary Dosimeter Unit `NP`).
    Particles,
    /// Monitor units, with the beam line's calibration.
    MonitorUnits {
        /// Particles per MU.
        particles_per_mu: f64,
    },
}

/// Options for [`compute_dose`] and [`DoseEngine`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DoseOptions {
    /// Virtual SADs `[x, y]`, mm, for beams whose plan gives none (infinite: parallel).
    pub default_sad_mm: [f64; 2],
    /// What the spot weights count.
    pub weight_unit: SpotWeightUnit,
    /// Fraction of each pencil beam's lateral integral kept (matRad's dosimetric lateral
    /// cut-off, default 0.995); the dose inside is scaled by its inverse. 1: no cut-off.
    pub lateral_cutoff: f64,
    /// How an energy finds its kernel (default [`EnergyMatch::Exact`] within 0.01 MeV/u:
    /// the CSV's four decimals, nothing interpolated).
    pub energy_match: EnergyMatch,
    /// Where rays start, mm above the isocenter plane (must clear the patient).
    pub upstream_mm: f64,
    /// Threads the rays are split over, the calling one included (default 1). Each count
    /// gives bit-identical grids run to run; different counts differ only in the order
    /// doses are summed (last bits of f64).
    pub threads: usize,
}

impl DoseOptions {
    /// Defaults with the given virtual SADs: weights in particles, cut-off 0.995.
    pub fn new(default_sad_mm: [f64; 2]) -> Self {
        DoseOptions {
            default_sad_mm,
            weight_unit: SpotWeightUnit::Particles,
            lateral_cutoff: 0.995,
            energy_match: EnergyMatch::Exact {
                tolerance_mev_u: 0.01,
            },
            upstream_mm: 1000.0,
            threads: 1,
        }
    }
    /// Sets what the spot weights count.
    pub fn with_weight_unit(mut self, unit: SpotWeightUnit) -> Self {
        self.weight_unit = unit;
        self
    }
    /// Sets the lateral cut-off fraction.
    pub fn with_lateral_cutoff(mut self, fraction: f64) -> Self {
        self.lateral_cutoff = fraction;
        self
    }
    /// Sets how many threads share the rays.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
    /// Matches energies exactly, within `tolerance` MeV/u.
    pub fn with_energy_tolerance_mev_u(mut self, tolerance: f64) -> Self {
        self.energy_match = EnergyMatch::Exact {
            tolerance_mev_u: tolerance,
        };
        self
    }
    /// Sets how energies find their kernels.
    pub fn with_energy_match(mut self, energy_match: EnergyMatch) -> Self {
        self.energy_match = energy_match;
        self
    }
}

/// A grid covering `ct`'s voxel box with the same orientation at `spacing_mm` (a coarser
/// dose grid): voxel centres start half a new voxel inside the CT box's corner.
pub fn dose_grid_like(ct: &Grid, spacing_mm: [f64; 3]) -> Result<Grid, DoseError> {
    let mut dims = [0usize; 3];
    let mut first = [0.0f64; 3];
    for a in 0..3 {
        let s = spacing_mm[a];
        if !(s.is_finite() && s > 0.0) {
            return Err(DoseError::BadOption {
                reason: format!("dose grid spacing must be finite and > 0 mm, got {spacing_mm:?}"),
            });
        }
        let extent = ct.dims()[a] as f64 * ct.spacing_mm()[a];
        dims[a] = ((extent / s).ceil() as usize).max(1);
        // In CT index units: the box starts at −½; the first new centre is ½ new voxel in.
        first[a] = -0.5 + 0.5 * s / ct.spacing_mm()[a];
    }
    Ok(Grid::new(
        dims,
        ct.index_to_patient(first),
        spacing_mm,
        *ct.direction(),
    )?)
}

/// The dose of `plan` on `dose_grid`, Gy, from the CT `ct` through `hlut`, with one machine
/// per ion in `machines`. Deterministic: the same inputs give bit-identical grids. The
/// plan's spots as [`delivered_spots`](super::delivered_spots) gives them, through a
/// [`DoseEngine`]: one dose path for plans and delivered spots.
pub fn compute_dose(
    plan: &IonPlan,
    ct: &CtVolume,
    hlut: &Hlut,
    machines: &[IonMachine],
    dose_grid: &Grid,
    options: &DoseOptions,
) -> Result<Volume<f32>, DoseError> {
    let mut engine = DoseEngine::new(machines, options.clone())?;
    let spots = engine.delivered_spots(plan, None)?;
    let mut dose = vec![0.0f64; dose_grid.len()];
    engine.add_dose(ct, hlut, plan, &spots, dose_grid, &mut dose)?;
    volume_threaded(dose_grid, &dose, options.threads)
}

/// `dose` (Gy, f64, in `dose_grid`'s voxel order) as an f32 volume.
pub fn dose_volume(dose_grid: &Grid, dose: &[f64]) -> Result<Volume<f32>, DoseError> {
    volume_threaded(dose_grid, dose, 1)
}

/// [`dose_volume`] with the conversion split over `threads` threads: a CT-sized grid is
/// some tens of MB read and written, most of its pages new.
fn volume_threaded(dose_grid: &Grid, dose: &[f64], threads: usize) -> Result<Volume<f32>, DoseError> {
    if dose.len() != dose_grid.len() {
        return Err(DoseError::BadOption {
            reason: format!(
                "{} dose values for a grid of {} voxels",
                dose.len(),
                dose_grid.len()
            ),
        });
    }
    let [ni, nj, nk] = dose_grid.dims();
    let mut values = vec![0.0f32; dose.len()];
    let per = dose.len().div_ceil(threads.max(1)).max(1);
    let convert = |out: &mut [f32], from: &[f64]| {
        for (o, d) in out.iter_mut().zip(from) {
            *o = *d as f32;
        }
    };
    std::thread::scope(|scope| {
        let convert = &convert;
        let mut pairs = values.chunks_mut(per).zip(dose.chunks(per));
        let first = pairs.next();
        for (o, d) in pairs {
            scope.spawn(move || convert(o, d));
        }
        if let Some((o, d)) = first {
            convert(o, d);
        }
    });
    let data = ndarray::Array3::from_shape_vec((nk, nj, ni), values).map_err(|e| DoseError::BadOption {
        reason: format!("dose grid shape: {e}"),
    })?;
    Volume::from_array(dose_grid.clone(), data).map_err(|e| DoseError::BadOption {
        reason: e.to_string(),
    })
}

/// One spot on a ray: its kernel, its particles and the water-equivalent depth added to
/// every voxel's for it (range shifter, or the shift that stands in for an off-grid energy;
/// > 0 moves the Bragg peak upstream).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RaySpot {
    pub(crate) kernel: usize,
    pub(crate) particles: f64,
    pub(crate) depth_offset_mm: f64,
}

/// Adds the dose of every ray of `tracer` (its last frame's profiles) into `dose`: ray `r`'s
/// spots are `ray_spots[ray_start[r]..ray_start[r + 1]]`.
pub(crate) fn add_rays(
    tracer: &SpotTracer,
    ray_start: &[usize],
    ray_spots: &[RaySpot],
    kernels: &[PencilKernel],
    dose_grid: &Grid,
    threads: usize,
    dose: &mut [f64],
) {
    let rays = tracer.rays();
    // Rays split into contiguous runs of about equal spot counts, one per thread, each
    // adding into its own grid; the grids are summed in run order, so a thread count always
    // gives the same bits.
    let threads = threads.clamp(1, rays.len().max(1));
    let total = ray_spots.len().max(1);
    let mut cuts = vec![0usize];
    for t in 1..threads {
        let want = total * t / threads;
        cuts.push(
            ray_start
                .partition_point(|&s| s < want)
                .min(rays.len())
                .max(cuts[t - 1]),
        );
    }
    cuts.push(rays.len());
    // Returns the range of grid offsets it added to (empty: `start > end`).
    let work = |from: usize, to: usize, dose: &mut [f64]| -> (usize, usize) {
        let mut near = Gathered::default();
        let mut touched = (usize::MAX, 0);
        for r in from..to {
            if let Some((lo, hi)) = add_ray(
                tracer,
                r,
                &ray_spots[ray_start[r]..ray_start[r + 1]],
                kernels,
                dose_grid,
                &mut near,
                dose,
            ) {
                touched = (touched.0.min(lo), touched.1.max(hi));
            }
        }
        touched
    };
    if threads == 1 {
        work(0, rays.len(), dose);
    } else {
        // Zeroed on allocation and touched only where a thread's rays reach, so that only
        // those pages are ever made (a beam covers a fraction of a CT-sized grid) and only
        // that range is summed.
        let mut parts: Vec<Vec<f64>> = (1..threads).map(|_| vec![0.0f64; dose_grid.len()]).collect();
        let mut touched = vec![(usize::MAX, 0); threads - 1];
        std::thread::scope(|scope| {
            let work = &work;
            let handles: Vec<_> = parts
                .iter_mut()
                .enumerate()
                .map(|(n, part)| {
                    let (from, to) = (cuts[n + 1], cuts[n + 2]);
                    scope.spawn(move || work(from, to, part))
                })
                .collect();
            work(cuts[0], cuts[1], dose);
            for (h, t) in handles.into_iter().zip(&mut touched) {
                match h.join() {
                    Ok(range) => *t = range,
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
        });
        add_parts(dose, &parts, &touched, threads);
    }
}

/// Adds each `parts[n]` over its `touched[n]` range (inclusive; empty when start > end) into
/// `dose`, the range split over `threads` threads. Every voxel still gets the parts in their
/// order, so the bits do not depend on the split.
fn add_parts(dose: &mut [f64], parts: &[Vec<f64>], touched: &[(usize, usize)], threads: usize) {
    let lo = touched.iter().map(|t| t.0).min().unwrap_or(usize::MAX);
    let hi = touched
        .iter()
        .filter(|t| t.0 <= t.1)
        .map(|t| t.1)
        .max()
        .unwrap_or(0);
    if lo > hi {
        return;
    }
    let per = (hi - lo + 1).div_ceil(threads.max(1));
    let add = |at: usize, d: &mut [f64]| {
        for (part, &(start, end)) in parts.iter().zip(touched) {
            let (a, b) = (start.max(at), end.min(at + d.len() - 1));
            if a <= b {
                for (x, p) in d[a - at..=b - at].iter_mut().zip(&part[a..=b]) {
                    *x += p;
                }
            }
        }
    };
    std::thread::scope(|scope| {
        let add = &add;
        let mut chunks = dose[lo..=hi].chunks_mut(per).enumerate();
        let first = chunks.next();
        for (n, d) in chunks {
            scope.spawn(move || add(lo + n * per, d));
        }
        if let Some((_, d)) = first {
            add(lo, d);
        }
    });
}

/// Per ray, reused: the voxels near it, a plane's voxels before they are binned, and the
/// ray's dose per voxel.
#[derive(Default)]
struct Gathered {
    near: Near,
    plane: Vec<(u32, f32, f32, u8)>,
    acc: Vec<f32>,
}

/// Adds the dose of ray `r`'s spots into `dose`; returns the range of offsets it added to
/// (`None`: nothing added).
fn add_ray(
    tracer: &SpotTracer,
    r: usize,
    spots: &[RaySpot],
    kernels: &[PencilKernel],
    dose_grid: &Grid,
    gathered: &mut Gathered,
    dose: &mut [f64],
) -> Option<(usize, usize)> {
    if spots.iter().all(|s| s.particles <= 0.0) {
        return None;
    }
    let profile = tracer.profile(r)?;
    let (Some(t_entry), Some(t_exit)) = (profile.entry_t_mm(), profile.exit_t_mm()) else {
        return None;
    };
    if profile.is_empty() {
        return None;
    }
    let live = || spots.iter().filter(|s| s.particles > 0.0);
    let radius_mm = live()
        .map(|s| kernels[s.kernel].max_cutoff_mm())
        .fold(0.0, f64::max);
    // Material upstream takes its thickness off the depth a spot reaches in the patient.
    let max_depth_mm = live()
        .map(|s| kernels[s.kernel].max_depth_mm() - s.depth_offset_mm)
        .fold(0.0, f64::max);
    let t_end = profile.depth_at_wepl(max_depth_mm).unwrap_or(t_exit);
    let ray = tracer.rays()[r];
    // `ProfileView::wepl_at_depth` with a cursor instead of a binary search: voxels come in
    // order of increasing t but for the spread within one plane, so the cursor moves little.
    let (ts, ws) = (profile.t_mm(), profile.wepl_mm());
    let total = profile.total_wepl_mm();
    let mut k = 1;
    // The last piece used, `(t0, t1, wepl at t0, slope)`: a plane's voxels mostly share one.
    let mut piece = (f64::NAN, f64::NAN, 0.0, 0.0);
    let wepl = move |t: f64| -> f64 {
        if t > piece.0 && t <= piece.1 {
            return piece.2 + (t - piece.0) * piece.3;
        }
        if t.is_nan() || t <= ts[0] {
            return 0.0;
        }
        while k < ts.len() && ts[k] < t {
            k += 1;
        }
        while k > 1 && ts[k - 1] >= t {
            k -= 1;
        }
        if k >= ts.len() {
            return total;
        }
        let (t0, t1, w0, w1) = (ts[k - 1], ts[k], ws[k - 1], ws[k]);
        if t1 <= t0 {
            return w1;
        }
        piece = (t0, t1, w0, (w1 - w0) / (t1 - t0));
        w0 + (t - t0) * piece.3
    };
    // A voxel beside the entry point can project onto the ray a little before it (an
    // oblique or curved surface): it is at the surface, depth 0, where the tables start.
    let t_start = t_entry - if radius_mm.is_finite() { radius_mm } else { 0.0 };
    gather_near(
        dose_grid,
        ray.origin,
        ray.direction,
        (t_start, t_end),
        radius_mm,
        gathered,
        wepl,
    );
    let n = gathered.near.len();
    if n == 0 {
        return None;
    }
    gathered.acc.clear();
    gathered.acc.resize(n + LANES, 0.0);
    for s in live() {
        kernels[s.kernel].add_spot(&gathered.near, s.particles, s.depth_offset_mm, &mut gathered.acc);
    }
    let (mut lo, mut hi) = (usize::MAX, 0);
    for (&o, &a) in gathered.near.offset[..n].iter().zip(&gathered.acc) {
        let o = o as usize;
        dose[o] += f64::from(a);
        lo = lo.min(o);
        hi = hi.max(o);
    }
    Some((lo, hi))
}

/// Collects the voxels of `grid` whose centres project onto the ray within `[t0, t1]` and lie
/// within `radius_mm` of it (infinite radius: the whole cross-section), with their depth
/// `wepl(t)`. Walks the grid's planes across the axis most aligned with the ray, in the
/// ray's direction; in each, the cylinder's section is an ellipse whose extent along either
/// in-plane axis is at most `radius / cos θ`.
fn gather_near(
    grid: &Grid,
    origin: PointMm,
    dir: crate::units::VectorMm,
    (t0, t1): (f64, f64),
    radius_mm: f64,
    out: &mut Gathered,
    mut wepl: impl FnMut(f64) -> f64,
) {
    let near = &mut out.near;
    near.offset.clear();
    near.depth_mm.clear();
    near.r_sq_mm2.clear();
    near.planes.clear();
    // Equal-area radial bins, so that a kernel narrower than the widest one skips the outer
    // ones.
    near.inv_radial_bin_mm2 = (RADIAL_BINS as f64 / (radius_mm * radius_mm)) as f32;
    if !near.inv_radial_bin_mm2.is_finite() {
        near.inv_radial_bin_mm2 = 0.0;
    }
    let dims = grid.dims();
    let sp = grid.spacing_mm();
    // Direction cosines of the ray with the grid axes.
    let cosines = grid.direction().transpose() * dir;
    let a = (0..3)
        .max_by(|&p, &q| cosines[p].abs().total_cmp(&cosines[q].abs()))
        .unwrap_or(2);
    let cos = cosines[a].abs();
    if cos.is_nan() || cos <= 0.0 {
        pad_lanes(&mut out.near);
        return;
    }
    let u0 = grid.patient_to_index(&origin);
    let ud = grid.patient_to_index_matrix() * dir;
    let (b, c) = ((a + 1) % 3, (a + 2) % 3);
    let r_sq = radius_mm * radius_mm;
    let slack = if radius_mm.is_finite() {
        radius_mm / cos
    } else {
        f64::INFINITY
    };
    // Planes the cylinder [t0, t1] of this radius can reach.
    let ua0 = u0[a] + ud[a] * t0;
    let ua1 = u0[a] + ud[a] * t1;
    let pad = slack * cos / sp[a] + 1.0;
    let lo = (ua0.min(ua1) - pad).floor().max(0.0);
    let hi = (ua0.max(ua1) + pad).ceil().min(dims[a] as f64 - 1.0);
    if lo.is_nan() || hi.is_nan() || lo > hi {
        pad_lanes(&mut out.near);
        return;
    }
    let (lo, hi) = (lo as usize, hi as usize);
    let col = |axis: usize| -> crate::units::VectorMm { grid.index_to_patient_matrix().column(axis).into() };
    let step_b = col(b);
    let step_c = col(c);
    let stride_c = [1, dims[0], dims[0] * dims[1]][c];
    let mut plane = |n: usize, out: &mut Gathered| {
        let t_n = (n as f64 - u0[a]) / ud[a];
        let cb = u0[b] + ud[b] * t_n;
        let cc = u0[c] + ud[c] * t_n;
        let hb = slack / sp[b] + 1.0;
        let hc = slack / sp[c] + 1.0;
        let (b_lo, b_hi) = (
            floor_inline(cb - hb).max(0.0),
            ceil_inline(cb + hb).min(dims[b] as f64 - 1.0),
        );
        let (c_lo, c_hi) = (
            floor_inline(cc - hc).max(0.0),
            ceil_inline(cc + hc).min(dims[c] as f64 - 1.0),
        );
        if !(b_lo <= b_hi && c_lo <= c_hi) {
            return;
        }
        out.plane.clear();
        let near = &mut out.near;
        let inv_bin = near.inv_radial_bin_mm2;
        let mut bin_end = [0u32; RADIAL_BINS];
        let stride_b = [1, dims[0], dims[0] * dims[1]][b];
        let mut ijk = [0usize; 3];
        ijk[a] = n;
        ijk[b] = b_lo as usize;
        ijk[c] = c_lo as usize;
        let p_first = grid.index_to_patient([ijk[0] as f64, ijk[1] as f64, ijk[2] as f64]);
        let offset_first = grid.offset(ijk[0], ijk[1], ijk[2]);
        let (t_b, rb_b) = (step_b.dot(&dir), step_b.norm_squared());
        // r² along a row is a quadratic in the step count m.
        let ra = rb_b - t_b * t_b;
        let inv_ra = 1.0 / ra;
        for (row, ic) in (c_lo as usize..=c_hi as usize).enumerate() {
            // Along the row only the b index moves: `r0 + 2·rb·m + ra·m²`; only the steps
            // where it is within the radius are visited.
            let v0 = p_first + step_c * row as f64 - origin;
            let t_0 = v0.dot(&dir);
            let (r0, rb) = (v0.norm_squared() - t_0 * t_0, v0.dot(&step_b) - t_0 * t_b);
            let (m_lo, m_hi) = if radius_mm.is_finite() && ra > 0.0 {
                let disc = rb * rb - ra * (r0 - r_sq);
                if disc.is_nan() || disc < 0.0 {
                    continue;
                }
                let root = disc.sqrt();
                // The steps between the roots; the ends are checked below.
                (
                    ceil_inline((-rb - root) * inv_ra),
                    floor_inline((-rb + root) * inv_ra),
                )
            } else {
                (0.0, b_hi - b_lo)
            };
            let mut m_lo = m_lo.max(0.0);
            let mut m_hi = m_hi.min(b_hi - b_lo);
            // Within the radius and within [t0, t1] are each an interval of steps (r² is
            // convex in m, t linear), so is both: trimmed at its two ends, the steps between
            // are all in, and the loop over them needs no test and no branch.
            let t_at = |m: f64| t_0 + t_b * m;
            let r2_at = |m: f64| (r0 + m * (2.0 * rb + ra * m)).max(0.0);
            let inside = |m: f64| {
                let t = t_at(m);
                t >= t0 && t <= t1 && r2_at(m) <= r_sq
            };
            while m_lo <= m_hi && !inside(m_lo) {
                m_lo += 1.0;
            }
            while m_hi > m_lo && !inside(m_hi) {
                m_hi -= 1.0;
            }
            // Neither is NaN: `max` and `min` above take the number over a NaN.
            if m_lo > m_hi {
                continue;
            }
            let (m0, m1) = (m_lo as usize, m_hi as usize);
            let mut offset = offset_first + (ic - c_lo as usize) * stride_c + m0 * stride_b;
            let mut mf = m_lo;
            for _ in m0..=m1 {
                let t = t_at(mf);
                let r2 = r2_at(mf) as f32;
                // Equal-area bins: a monotone function of r², as `add_spot` reads it.
                let bin = radial_bin(r2, inv_bin).min(RADIAL_BINS - 1);
                bin_end[bin] += 1;
                // Offsets fit in u32: `compute_dose` refuses larger grids.
                out.plane.push((offset as u32, wepl(t) as f32, r2, bin as u8));
                offset += stride_b;
                mf += 1.0;
            }
        }
        if out.plane.is_empty() {
            return;
        }
        // Counting sort into the radial bins, each bin in gathering order.
        let start = near.offset.len() as u32;
        let mut at = start;
        let mut next = [0u32; RADIAL_BINS];
        for (e, nx) in bin_end.iter_mut().zip(&mut next) {
            *nx = at;
            at += *e;
            *e = at;
        }
        let len = near.offset.len() + out.plane.len();
        near.offset.resize(len, 0);
        near.depth_mm.resize(len, 0.0);
        near.r_sq_mm2.resize(len, 0.0);
        let (mut shallowest_mm, mut deepest_mm) = (f32::INFINITY, f32::NEG_INFINITY);
        for &(offset, depth_mm, r2, bin) in &out.plane {
            let j = &mut next[bin as usize];
            let at = *j as usize;
            near.offset[at] = offset;
            near.depth_mm[at] = depth_mm;
            near.r_sq_mm2[at] = r2;
            *j += 1;
            shallowest_mm = shallowest_mm.min(depth_mm);
            deepest_mm = deepest_mm.max(depth_mm);
        }
        near.planes.push(Plane {
            start,
            bin_end,
            shallowest_mm,
            deepest_mm,
        });
    };
    if ud[a] > 0.0 {
        for n in lo..=hi {
            plane(n, out);
        }
    } else {
        for n in (lo..=hi).rev() {
            plane(n, out);
        }
    }
    pad_lanes(&mut out.near);
}

/// `x.floor()` without a call: the baseline x86-64 target has no rounding instruction for
/// f64, so `f64::floor` is a libm call, and the gathering takes four per row of voxels.
/// Same result for every `x` (NaN and infinities returned as they are).
#[inline]
fn floor_inline(x: f64) -> f64 {
    // Beyond 2⁵², every f64 is an integer.
    if x.is_nan() || x.abs() >= 4_503_599_627_370_496.0 {
        return x;
    }
    let t = x as i64 as f64;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

/// `x.ceil()` without a call (see [`floor_inline`]).
#[inline]
fn ceil_inline(x: f64) -> f64 {
    -floor_inline(-x)
}

/// Appends the `LANES` zero entries that let a whole chunk of lanes always be read.
fn pad_lanes(near: &mut Near) {
    let len = near.offset.len() + LANES;
    near.offset.resize(len, 0);
    near.depth_mm.resize(len, 0.0);
    near.r_sq_mm2.resize(len, 0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{EnergyLayer, IonBeam, Spot};
    use crate::units::Ion;
    use std::path::Path;

    /// Depth voxels along y (the beam's axis for gantry 0, HFS), 0.5 mm; 1 mm across; water.
    const NJ: usize = 400;
    const DY: f64 = 0.5;

    fn phantom() -> CtVolume {
        let grid = Grid::axis_aligned([21, NJ, 21], PointMm::new(-10.0, 0.0, -10.0), [1.0, DY, 1.0])
            .unwrap_or_else(|e| panic!("{e}"));
        Volume::filled(grid, 0i16)
    }

    fn water() -> Hlut {
        Hlut::from_points(
            vec![(-1024.0, 0.0), (0.0, 1.0), (3000.0, 2.8)],
            Path::new("<test>"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn plan(energy_mev_u: f64) -> IonPlan {
        IonPlan {
            sop_instance_uid: "1".into(),
            frame_of_reference_uid: "1".into(),
            patient_id: "p".into(),
            label: "pencil".into(),
            beams: vec![IonBeam {
                number: 1,
                name: "b".into(),
                radiation_type: "ION".into(),
                ion: Ion::CARBON12,
                gantry_angle_deg: 0.0,
                couch_angle_deg: 0.0,
                isocenter_mm: PointMm::new(0.0, 100.0, 0.0),
                patient_position: Some("HFS".into()),
                virtual_sad_mm: None,
                range_shifters: vec![],
                primary_dosimeter_unit: None,
                layers: vec![EnergyLayer {
                    energy_mev_u,
                    spots: vec![Spot {
                        x_mm: 0.0,
                        y_mm: 0.0,
                        weight: 1e7,
                    }],
                }],
            }],
        }
    }

    /// The threaded merge adds each part over exactly its touched range, in part order, for
    /// any split: against the plain sum of the parts over their ranges, bit for bit. And
    /// the threaded f32 conversion gives every voxel its own value.
    #[test]
    fn threaded_merge_and_conversion_match_the_plain_loops() {
        let n = 1001;
        let value = |k: usize, i: usize| ((k * 7919 + i * 104_729) % 1000) as f64 * 0.1 + 0.013;
        let parts: Vec<Vec<f64>> = (0..3)
            .map(|k| (0..n).map(|i| value(k + 1, i)).collect())
            .collect();
        // An empty range (start > end) adds nothing.
        let touched = [(10, 500), (usize::MAX, 0), (300, 1000)];
        let base: Vec<f64> = (0..n).map(|i| value(0, i)).collect();
        let mut want = base.clone();
        for (part, &(start, end)) in parts.iter().zip(&touched) {
            if start <= end {
                for i in start..=end {
                    want[i] += part[i];
                }
            }
        }
        for threads in [1, 2, 3, 7] {
            let mut got = base.clone();
            add_parts(&mut got, &parts, &touched, threads);
            assert!(
                got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{threads} threads"
            );
        }
        let grid =
            Grid::axis_aligned([11, 13, 7], PointMm::origin(), [1.0; 3]).unwrap_or_else(|e| panic!("{e}"));
        let dose: Vec<f64> = (0..grid.len()).map(|i| value(5, i)).collect();
        for threads in [1, 2, 3] {
            let v = volume_threaded(&grid, &dose, threads).unwrap_or_else(|e| panic!("{e}"));
            for k in 0..7 {
                for j in 0..13 {
                    for i in 0..11 {
                        assert_eq!(v.get(i, j, k).copied(), Some(dose[grid.offset(i, j, k)] as f32));
                    }
                }
            }
        }
    }

    /// 10 mm of water-equivalent material upstream moves the whole depth-dose curve, and so
    /// the Bragg peak, 10 mm (20 depth voxels) shallower.
    #[test]
    fn a_depth_offset_moves_the_bragg_peak_that_much_shallower() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/matrad/carbon_Generic");
        let machine = IonMachine::from_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        let ct = phantom();
        let axis = |offset_mm: f64| -> Vec<f64> {
            let plan = plan(245.79);
            let mut engine = DoseEngine::new(
                std::slice::from_ref(&machine),
                DoseOptions::new([f64::INFINITY; 2]),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let mut spots = engine
                .delivered_spots(&plan, None)
                .unwrap_or_else(|e| panic!("{e}"));
            spots[0].range_shifter_mm_we = offset_mm;
            let mut acc = vec![0.0; ct.grid().len()];
            engine
                .add_dose(&ct, &water(), &plan, &spots, ct.grid(), &mut acc)
                .unwrap_or_else(|e| panic!("{e}"));
            let d = dose_volume(ct.grid(), &acc).unwrap_or_else(|e| panic!("{e}"));
            (0..NJ)
                .map(|j| f64::from(d.get(10, j, 10).copied().unwrap_or(f32::NAN)))
                .collect()
        };
        let (plain, shifted) = (axis(0.0), axis(10.0));
        let peak = |c: &[f64]| (0..NJ).max_by(|&a, &b| c[a].total_cmp(&c[b])).unwrap_or(0);
        let (p0, p1) = (peak(&plain), peak(&shifted));
        assert!(p0 > 100 && p0 < NJ - 50, "peak voxel {p0}");
        assert_eq!(
            p0 - p1,
            20,
            "peak at {} mm, shifted {} mm",
            p0 as f64 * DY,
            p1 as f64 * DY
        );
        let max = plain[p0];
        for j in 0..NJ - 20 {
            assert!(
                (shifted[j] - plain[j + 20]).abs() <= 1e-5 * max,
                "depth voxel {j}: {} vs {} Gy 10 mm deeper",
                shifted[j],
                plain[j + 20]
            );
        }
        // A negative offset (an energy just below the machine's lowest, read shallower)
        // moves the curve deeper: 3 mm, 6 voxels; the first 3 mm repeat the entrance.
        let pulled = axis(-3.0);
        assert_eq!(peak(&pulled), p0 + 6);
        for j in 8..NJ {
            assert!(
                (pulled[j] - plain[j - 6]).abs() <= 1e-5 * max,
                "depth voxel {j}: {} vs {} Gy 3 mm shallower",
                pulled[j],
                plain[j - 6]
            );
        }
    }
}
