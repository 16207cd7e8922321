//! A plan's dose on a grid: rays traced once through the CT by the range engine's
//! [`SpotTracer`], the dose-grid voxels near each ray gathered once with their
//! water-equivalent depth and radial distance, then every spot of that ray added from that
//! list.

use super::delivered::{DoseEngine, EnergyMatch};
use super::machine::IonMachine;
use super::pencil::{Near, PencilKernel};
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
    dose_volume(dose_grid, &dose)
}

/// `dose` (Gy, f64, in `dose_grid`'s voxel order) as an f32 volume.
pub fn dose_volume(dose_grid: &Grid, dose: &[f64]) -> Result<Volume<f32>, DoseError> {
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
    let data = ndarray::Array3::from_shape_vec((nk, nj, ni), dose.iter().map(|&d| d as f32).collect())
        .map_err(|e| DoseError::BadOption {
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
    let work = |from: usize, to: usize, dose: &mut [f64]| {
        let mut near = Gathered::default();
        for r in from..to {
            add_ray(
                tracer,
                r,
                &ray_spots[ray_start[r]..ray_start[r + 1]],
                kernels,
                dose_grid,
                &mut near,
                dose,
            );
        }
    };
    if threads == 1 {
        work(0, rays.len(), dose);
    } else {
        let mut parts: Vec<Vec<f64>> = (1..threads).map(|_| vec![0.0f64; dose_grid.len()]).collect();
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
            for h in handles {
                if let Err(p) = h.join() {
                    std::panic::resume_unwind(p);
                }
            }
        });
        for part in &parts {
            for (d, p) in dose.iter_mut().zip(part) {
                *d += p;
            }
        }
    }
}

/// Per ray, reused: the voxels near it, grouped by grid plane in order of increasing depth
/// along the ray, and each plane's `(first voxel, shallowest depth)`.
#[derive(Default)]
struct Gathered {
    near: Vec<Near>,
    planes: Vec<(usize, f64)>,
}

/// Adds the dose of ray `r`'s spots into `dose`.
fn add_ray(
    tracer: &SpotTracer,
    r: usize,
    spots: &[RaySpot],
    kernels: &[PencilKernel],
    dose_grid: &Grid,
    gathered: &mut Gathered,
    dose: &mut [f64],
) {
    if spots.iter().all(|s| s.particles <= 0.0) {
        return;
    }
    let Some(profile) = tracer.profile(r) else {
        return;
    };
    let (Some(t_entry), Some(t_exit)) = (profile.entry_t_mm(), profile.exit_t_mm()) else {
        return;
    };
    if profile.is_empty() {
        return;
    }
    let radius_mm = spots
        .iter()
        .map(|s| kernels[s.kernel].max_cutoff_mm())
        .fold(0.0, f64::max);
    let max_depth_mm = spots
        .iter()
        .map(|s| kernels[s.kernel].max_depth_mm() - s.depth_offset_mm)
        .fold(0.0, f64::max);
    let t_end = profile.depth_at_wepl(max_depth_mm).unwrap_or(t_exit);
    let ray = tracer.rays()[r];
    // `ProfileView::wepl_at_depth` with a cursor instead of a binary search: voxels come in
    // order of increasing t but for the spread within one plane, so the cursor moves little.
    let (ts, ws) = (profile.t_mm(), profile.wepl_mm());
    let total = profile.total_wepl_mm();
    let mut k = 1;
    let wepl = move |t: f64| -> f64 {
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
        w0 + (w1 - w0) * (t - t0) / (t1 - t0)
    };
    gathered.near.clear();
    gathered.planes.clear();
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
    for s in spots {
        if s.particles > 0.0 {
            kernels[s.kernel].add_planes(
                &gathered.near,
                &gathered.planes,
                s.particles,
                s.depth_offset_mm,
                dose,
            );
        }
    }
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
    let dims = grid.dims();
    let sp = grid.spacing_mm();
    // Direction cosines of the ray with the grid axes.
    let cosines = grid.direction().transpose() * dir;
    let a = (0..3)
        .max_by(|&p, &q| cosines[p].abs().total_cmp(&cosines[q].abs()))
        .unwrap_or(2);
    let cos = cosines[a].abs();
    if cos.is_nan() || cos <= 0.0 {
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
        return;
    }
    let (lo, hi) = (lo as usize, hi as usize);
    let col = |axis: usize| -> crate::units::VectorMm { grid.index_to_patient_matrix().column(axis).into() };
    let step_b = col(b);
    let mut plane = |n: usize, out: &mut Gathered| {
        let t_n = (n as f64 - u0[a]) / ud[a];
        let cb = u0[b] + ud[b] * t_n;
        let cc = u0[c] + ud[c] * t_n;
        let hb = slack / sp[b] + 1.0;
        let hc = slack / sp[c] + 1.0;
        let (b_lo, b_hi) = (
            (cb - hb).floor().max(0.0),
            (cb + hb).ceil().min(dims[b] as f64 - 1.0),
        );
        let (c_lo, c_hi) = (
            (cc - hc).floor().max(0.0),
            (cc + hc).ceil().min(dims[c] as f64 - 1.0),
        );
        if !(b_lo <= b_hi && c_lo <= c_hi) {
            return;
        }
        let start = out.near.len();
        let mut shallowest = f64::INFINITY;
        for ic in c_lo as usize..=c_hi as usize {
            let mut ijk = [0usize; 3];
            ijk[a] = n;
            ijk[b] = b_lo as usize;
            ijk[c] = ic;
            // Along the row only the b index moves: step the patient point by its column.
            let mut p = grid.index_to_patient([ijk[0] as f64, ijk[1] as f64, ijk[2] as f64]);
            for ib in b_lo as usize..=b_hi as usize {
                if ib > b_lo as usize {
                    p += step_b;
                }
                let v = p - origin;
                let t = v.dot(&dir);
                if t < t0 || t > t1 {
                    continue;
                }
                let r2 = (v - dir * t).norm_squared();
                if r2 > r_sq {
                    continue;
                }
                ijk[b] = ib;
                let depth_mm = wepl(t);
                shallowest = shallowest.min(depth_mm);
                out.near.push(Near {
                    offset: grid.offset(ijk[0], ijk[1], ijk[2]),
                    depth_mm,
                    r_sq_mm2: r2,
                });
            }
        }
        if out.near.len() > start {
            out.planes.push((start, shallowest));
        }
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
}
