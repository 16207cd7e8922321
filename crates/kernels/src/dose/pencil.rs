//! One energy's pencil beam, prepared for evaluation at (water-equivalent depth, radial
//! distance²): matRad's HongPB formula with its lateral cut-off.

use super::machine::{EnergyKernel, LateralModel};

/// matRad's conversion from MeV·cm²/g per primary to Gy·mm² per 10⁶ primaries.
pub const GY_MM2_PER_MEGA_ION: f64 = 1.602_176_620_8e-2;

/// Most Gaussian components any lateral model has.
const MAX_COMPONENTS: usize = 3;

/// A kernel ready to evaluate. Tabulated columns are interpolated linearly in depth, within
/// this energy only.
#[derive(Debug, Clone)]
pub struct PencilKernel {
    /// Tabulated depths plus the machine's offset, mm w.e.
    depths_mm: Vec<f64>,
    /// IDD as Gy·mm² per ion, times the cut-off compensation.
    idd_gy_mm2: Vec<f64>,
    /// Sigma in water per component and depth, mm.
    sigma_water_mm: Vec<Vec<f64>>,
    /// Weights of components 1.. per depth (component 0 takes the rest).
    weights: Vec<Vec<f64>>,
    sigma_initial_sq_mm2: f64,
    /// Lateral cut-off radius² per depth, mm² (infinite without a cut-off).
    cutoff_sq_mm2: Vec<f64>,
    max_cutoff_mm: f64,
}

/// Fraction of a normalized sum of 2D Gaussians (weights `w`, variances `v`) outside radius²
/// `x`.
fn outside(w: &[f64], v: &[f64], x: f64) -> f64 {
    w.iter().zip(v).map(|(w, v)| w * (-x / (2.0 * v)).exp()).sum()
}

impl PencilKernel {
    /// Prepares `k` for `model`, cutting each depth's lateral profile at the radius that
    /// encloses `cutoff_fraction` of its integral and scaling the dose inside by
    /// `1 / cutoff_fraction` (matRad's "integral" cut-off with its compensation). A fraction
    /// of 1 keeps the whole profile.
    pub fn new(k: &EnergyKernel, model: LateralModel, cutoff_fraction: f64) -> Self {
        let n = k.depths_mm.len();
        let comp = model.components();
        let sigma_initial_sq_mm2 = k.sigma_initial_mm * k.sigma_initial_mm;
        let compensation = if cutoff_fraction < 1.0 {
            1.0 / cutoff_fraction
        } else {
            1.0
        };
        let mut cutoff_sq_mm2 = vec![f64::INFINITY; n];
        if cutoff_fraction < 1.0 {
            let tail = 1.0 - cutoff_fraction;
            for (d, cut) in cutoff_sq_mm2.iter_mut().enumerate() {
                let mut w = [0.0; MAX_COMPONENTS];
                let mut v = [0.0; MAX_COMPONENTS];
                for c in 0..comp {
                    let s = k.sigma_water_mm[c][d];
                    v[c] = s * s + sigma_initial_sq_mm2;
                    w[c] = if c == 0 {
                        1.0 - k.weights.iter().map(|w| w[d]).sum::<f64>()
                    } else {
                        k.weights[c - 1][d]
                    };
                }
                let vmax = v[..comp].iter().copied().fold(0.0, f64::max);
                // The enclosed fraction only grows with radius; bisect radius² between 0 and
                // the radius where even the widest component alone leaves `tail` outside.
                let (mut lo, mut hi) = (0.0, -2.0 * vmax * tail.ln());
                for _ in 0..80 {
                    let mid = 0.5 * (lo + hi);
                    if outside(&w[..comp], &v[..comp], mid) > tail {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                *cut = hi;
            }
        }
        let max_cutoff_mm = cutoff_sq_mm2.iter().copied().fold(0.0, f64::max).sqrt();
        PencilKernel {
            depths_mm: k.depths_mm.iter().map(|d| d + k.offset_mm).collect(),
            idd_gy_mm2: k
                .idd_mev_cm2_per_g
                .iter()
                .map(|v| v * GY_MM2_PER_MEGA_ION * 1e-6 * compensation)
                .collect(),
            sigma_water_mm: k.sigma_water_mm.clone(),
            weights: k.weights.clone(),
            sigma_initial_sq_mm2,
            cutoff_sq_mm2,
            max_cutoff_mm,
        }
    }

    /// The widest lateral cut-off at any depth, mm (infinite without a cut-off).
    pub fn max_cutoff_mm(&self) -> f64 {
        self.max_cutoff_mm
    }

    /// The deepest tabulated depth, mm w.e.: beyond it the kernel gives no dose.
    pub fn max_depth_mm(&self) -> f64 {
        self.depths_mm[self.depths_mm.len() - 1]
    }

    /// Dose per primary ion, Gy, at water-equivalent depth `depth_mm` and squared distance
    /// `r_sq_mm2` from the pencil beam's axis. Depths before the first tabulated one take its
    /// values (matRad clamps there too); beyond the last, and beyond the cut-off, zero.
    #[inline]
    pub fn dose_gy_per_ion(&self, depth_mm: f64, r_sq_mm2: f64) -> f64 {
        let d = &self.depths_mm;
        if depth_mm.is_nan() || depth_mm > d[d.len() - 1] {
            return 0.0;
        }
        self.at(d.partition_point(|&x| x < depth_mm), depth_mm, r_sq_mm2)
    }

    /// Adds `particles` ions' dose to `dose` at every voxel of `near`, grouped in `planes`
    /// (`(first voxel, shallowest depth)`, shallowest first), each voxel's depth taken
    /// `depth_offset_mm` deeper (a range shifter upstream): planes that start deeper than
    /// the table end the walk, and the table index follows the depths from voxel to voxel
    /// instead of searching. The formula is [`Self::dose_gy_per_ion`]'s, with the
    /// exponentials taken eight voxels at a time in single precision (`wide::f32x8::exp`;
    /// relative differences from `f64::exp` ~1e-6).
    pub(crate) fn add_planes(
        &self,
        near: &[Near],
        planes: &[(usize, f64)],
        particles: f64,
        depth_offset_mm: f64,
        dose: &mut [f64],
    ) {
        let d = &self.depths_mm;
        let max = d[d.len() - 1];
        let max_r_sq = self.max_cutoff_mm * self.max_cutoff_mm;
        let comps = self.sigma_water_mm.len();
        let mut batch = Batch::default();
        let mut k = 0;
        for (p, &(start, shallowest)) in planes.iter().enumerate() {
            if shallowest + depth_offset_mm > max {
                break;
            }
            let end = planes.get(p + 1).map_or(near.len(), |q| q.0);
            for v in &near[start..end] {
                let depth_mm = v.depth_mm + depth_offset_mm;
                if v.r_sq_mm2 > max_r_sq || depth_mm.is_nan() || depth_mm > max {
                    continue;
                }
                // k: the first tabulated depth ≥ this one, as `partition_point` gives it.
                while d[k] < depth_mm {
                    k += 1;
                }
                while k > 0 && d[k - 1] >= depth_mm {
                    k -= 1;
                }
                let (i0, i1, f) = if k == 0 {
                    (0, 0, 0.0)
                } else {
                    (k - 1, k, (depth_mm - d[k - 1]) / (d[k] - d[k - 1]))
                };
                let lerp = |t: &[f64]| t[i0] + (t[i1] - t[i0]) * f;
                // NaN without a cut-off: then nothing is cut (see `at`).
                if v.r_sq_mm2 > lerp(&self.cutoff_sq_mm2) {
                    continue;
                }
                let n = batch.len;
                let idd = lerp(&self.idd_gy_mm2) * (0.5 * std::f64::consts::FRAC_1_PI) * particles;
                let mut rest = 1.0;
                for c in (0..comps).rev() {
                    let w = if c == 0 {
                        rest
                    } else {
                        let w = lerp(&self.weights[c - 1]);
                        rest -= w;
                        w
                    };
                    let s = lerp(&self.sigma_water_mm[c]);
                    batch.amp[c][n] = (idd * w) as f32;
                    batch.var[c][n] = (s * s + self.sigma_initial_sq_mm2) as f32;
                }
                batch.r_sq[n] = v.r_sq_mm2 as f32;
                batch.offset[n] = v.offset;
                batch.len += 1;
                if batch.len == LANES {
                    batch.flush(comps, dose);
                }
            }
        }
        batch.flush(comps, dose);
    }

    /// The formula at `depth_mm` ≤ the last depth, `k` the first tabulated depth ≥ it.
    #[inline]
    fn at(&self, k: usize, depth_mm: f64, r_sq_mm2: f64) -> f64 {
        let d = &self.depths_mm;
        let (i0, i1, f) = if k == 0 {
            (0, 0, 0.0)
        } else {
            (k - 1, k, (depth_mm - d[k - 1]) / (d[k] - d[k - 1]))
        };
        let lerp = |v: &[f64]| v[i0] + (v[i1] - v[i0]) * f;
        // Without a cut-off the radii are infinite and their interpolation NaN: the
        // comparison is then false and nothing is cut.
        if r_sq_mm2 > lerp(&self.cutoff_sq_mm2) {
            return 0.0;
        }
        let mut rest = 1.0;
        let mut lateral = 0.0;
        for c in (0..self.sigma_water_mm.len()).rev() {
            let w = if c == 0 {
                rest
            } else {
                let w = lerp(&self.weights[c - 1]);
                rest -= w;
                w
            };
            let s = lerp(&self.sigma_water_mm[c]);
            let inv_var = 1.0 / (s * s + self.sigma_initial_sq_mm2);
            lateral += w * inv_var * (-0.5 * r_sq_mm2 * inv_var).exp();
        }
        lerp(&self.idd_gy_mm2) * lateral * (0.5 * std::f64::consts::FRAC_1_PI)
    }
}

const LANES: usize = 8;

/// Up to eight voxels' Gaussian terms, per component: amplitude (IDD × weight × particles
/// / 2π), variance, and the voxel's radius².
#[derive(Default)]
struct Batch {
    offset: [usize; LANES],
    r_sq: [f32; LANES],
    amp: [[f32; LANES]; MAX_COMPONENTS],
    var: [[f32; LANES]; MAX_COMPONENTS],
    len: usize,
}

impl Batch {
    /// Adds the batch's doses and empties it. The Gaussians are evaluated in single
    /// precision, eight at a time: relative error ~1e-6 (mostly the exponential's argument
    /// near the cut-off), far below the model's and the f32 grid's; the sums are f64.
    #[inline]
    fn flush(&mut self, comps: usize, dose: &mut [f64]) {
        if self.len == 0 {
            return;
        }
        // Unused lanes: amplitude 0, variance 1.
        for n in self.len..LANES {
            self.r_sq[n] = 0.0;
            for c in 0..comps {
                self.amp[c][n] = 0.0;
                self.var[c][n] = 1.0;
            }
        }
        let r_sq = wide::f32x8::from(self.r_sq);
        let mut sum = wide::f32x8::ZERO;
        for c in 0..comps {
            let inv = wide::f32x8::ONE / wide::f32x8::from(self.var[c]);
            let e = (r_sq * inv * wide::f32x8::splat(-0.5)).exp();
            sum += wide::f32x8::from(self.amp[c]) * inv * e;
        }
        let sum = sum.to_array();
        for n in 0..self.len {
            dose[self.offset[n]] += f64::from(sum[n]);
        }
        self.len = 0;
    }
}

/// One dose-grid voxel near a ray: its offset in the grid, water-equivalent depth and squared
/// distance from the ray.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Near {
    pub(crate) offset: usize,
    pub(crate) depth_mm: f64,
    pub(crate) r_sq_mm2: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(model: LateralModel) -> EnergyKernel {
        let (sigma_water_mm, weights) = match model {
            LateralModel::Single => (vec![vec![1.0, 2.0]], vec![]),
            LateralModel::Double => (vec![vec![1.0, 2.0], vec![6.0, 8.0]], vec![vec![0.2, 0.3]]),
            LateralModel::Multi => (
                vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![9.0, 12.0]],
                vec![vec![0.05, 0.05], vec![0.01, 0.02]],
            ),
        };
        EnergyKernel {
            energy_mev_u: 100.0,
            peak_pos_mm: 10.0,
            offset_mm: 0.0,
            sigma_initial_mm: 3.0,
            depths_mm: vec![0.0, 20.0],
            idd_mev_cm2_per_g: vec![100.0, 300.0],
            sigma_water_mm,
            weights,
        }
    }

    /// The cut-off radius encloses exactly the asked fraction: integrate the kernel's own
    /// lateral profile numerically (midpoint rule in r, 2πr dr) out to it.
    #[test]
    fn cutoff_radius_encloses_the_asked_fraction_of_the_lateral_integral() {
        for model in [LateralModel::Single, LateralModel::Double, LateralModel::Multi] {
            let k = kernel(model);
            let whole = PencilKernel::new(&k, model, 1.0);
            let cut = PencilKernel::new(&k, model, 0.995);
            for (depth, d) in [(0.0, 0usize), (20.0, 1)] {
                let r_cut = cut.cutoff_sq_mm2[d].sqrt();
                let n = 200_000;
                let dr = r_cut / n as f64;
                let inside: f64 = (0..n)
                    .map(|i| {
                        let r = (i as f64 + 0.5) * dr;
                        whole.dose_gy_per_ion(depth, r * r) * 2.0 * std::f64::consts::PI * r * dr
                    })
                    .sum();
                let idd = whole.idd_gy_mm2[d];
                assert!(
                    (inside / idd - 0.995).abs() < 1e-6,
                    "{model:?} depth {depth}: {}",
                    inside / idd
                );
                // Inside, the compensated dose is the whole one / 0.995; beyond, nothing.
                let r2 = 0.25 * r_cut * r_cut;
                let ratio = cut.dose_gy_per_ion(depth, r2) / whole.dose_gy_per_ion(depth, r2);
                assert!((ratio - 1.0 / 0.995).abs() < 1e-12);
                assert_eq!(cut.dose_gy_per_ion(depth, 1.0001 * r_cut * r_cut), 0.0);
            }
        }
    }

    #[test]
    fn depth_is_interpolated_within_the_table_and_nothing_lies_beyond() {
        let k = kernel(LateralModel::Single);
        let p = PencilKernel::new(&k, LateralModel::Single, 1.0);
        // Axis, depth 5: IDD 150, sigma_water 1.25, total variance 1.5625 + 9.
        let want = 150.0 * GY_MM2_PER_MEGA_ION * 1e-6 / (2.0 * std::f64::consts::PI * (1.5625 + 9.0));
        assert!((p.dose_gy_per_ion(5.0, 0.0) / want - 1.0).abs() < 1e-14);
        assert_eq!(p.dose_gy_per_ion(20.0001, 0.0), 0.0);
        assert_eq!(p.dose_gy_per_ion(f64::NAN, 0.0), 0.0);
        // Before the first depth: the first row.
        assert_eq!(p.dose_gy_per_ion(-1.0, 4.0), p.dose_gy_per_ion(0.0, 4.0));
    }
}
