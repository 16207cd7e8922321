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
    /// The same table as linear pieces in single precision, for [`Self::add_spot`].
    segments: Segments,
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
                if comp == 1 {
                    // One Gaussian leaves exp(−r²/2v) outside r: solved exactly.
                    *cut = -2.0 * v[0] * tail.ln();
                    continue;
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
        let mut kernel = PencilKernel {
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
            segments: Segments::default(),
        };
        kernel.segments = Segments::new(&kernel);
        kernel
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

    /// Adds `particles` ions' dose, their depths `depth_offset_mm` deeper than `near`'s
    /// (water-equivalent material upstream of the patient), to `acc` (`near`'s order).
    /// Planes that start deeper than the table end the walk; in each plane only the radial
    /// bins that can lie within the plane's cut-off are visited. The formula is
    /// [`Self::dose_gy_per_ion`]'s, in single precision four voxels at a time
    /// (`wide::f32x4`), on the table's own linear pieces (no resampling): a plane whose
    /// voxels all lie in one piece (most, when the ray crosses the planes near-normally)
    /// shares that piece's row; otherwise each voxel finds its piece from the plane's
    /// shallowest.
    pub(crate) fn add_spot(&self, near: &Near, particles: f64, depth_offset_mm: f64, acc: &mut [f32]) {
        match self.segments.comps {
            1 => self.segments.add_spot::<1>(near, particles, depth_offset_mm, acc),
            2 => self.segments.add_spot::<2>(near, particles, depth_offset_mm, acc),
            _ => self.segments.add_spot::<3>(near, particles, depth_offset_mm, acc),
        }
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

/// Voxels evaluated together.
pub(crate) const LANES: usize = 4;
/// The lanes, one SSE register.
type V = wide::f32x4;

/// `2ʸ` for `y ≤ 0`, the Gaussians' argument in base 2, to single precision: relative error
/// below 3e-6 (`2^f` by a degree-4 polynomial fitted for least relative error on `|f| ≤ ½`,
/// 2.7e-6 evaluated in f32, and the rounding of the argument, at most 3.3e-7 inside the
/// lateral cut-off, `y ≥ −7.7`). `y` below −125 gives about `2⁻¹²⁵`, not 0: every such lane
/// lies far beyond the lateral cut-off, which masks it. Fewer than half the instructions of
/// `wide::f32x4::exp` (which also handles overflow, NaN and any argument): the evaluation
/// spends most of its time here. The polynomial is evaluated in Estrin's order, not
/// Horner's: a dependency chain half as long, and the loop is bound by that chain (its
/// iterations overlap only as far as the reorder buffer reaches).
#[inline(always)]
fn exp2_nonpositive(y: V) -> V {
    // Adding 1.5·2²³ rounds to an integer (to nearest) for |y| < 2²²; subtracting it back
    // gives that integer as a float.
    const ROUNDER: f32 = 12_582_912.0;
    // 2^f on [−½, ½], lowest order first: least squares iteratively reweighted to the
    // smallest largest relative error (2.65e-6 in exact arithmetic).
    const P: [f32; 5] = [0.999_999_3, 0.693_122, 0.240_247_44, 0.055_916_77, 0.009_569_732];
    let y = y.fast_max(V::splat(-125.0));
    let n = (y + V::splat(ROUNDER)) - V::splat(ROUNDER);
    let f = y - n;
    let f2 = f * f;
    let p01 = V::splat(P[0]) + f * V::splat(P[1]);
    let p23 = V::splat(P[2]) + f * V::splat(P[3]);
    let p = p01 + f2 * (p23 + f2 * V::splat(P[4]));
    // 2ⁿ: n + 127 in the exponent bits (n ≥ −125 here). Adding 127 + 2²³ puts the integer
    // n + 127 in the low mantissa bits; shifting those up 23 places makes it the exponent.
    let biased: wide::i32x4 = bytemuck::cast(n + V::splat(127.0 + 8_388_608.0));
    let two_n: V = bytemuck::cast(biased << 23);
    p * two_n
}

/// Radial bins a plane's voxels are grouped in, by r² (equal areas).
pub(crate) const RADIAL_BINS: usize = 64;

/// The radial bin of radius² `r_sq_mm2` (≥ 0), the last one open: the gathering files each
/// voxel by it and [`PencilKernel::add_spot`] finds the last bin inside a cut-off by it, so
/// one monotone function serves both. Clamped as a float, so that the conversion is the
/// cheap 32-bit one (the gathering takes one per voxel).
#[inline(always)]
pub(crate) fn radial_bin(r_sq_mm2: f32, inv_radial_bin_mm2: f32) -> usize {
    (r_sq_mm2 * inv_radial_bin_mm2).min((RADIAL_BINS - 1) as f32) as u32 as usize
}

/// A kernel's table as its linear pieces, single precision, for [`PencilKernel::add_spot`]:
/// piece `s` covers depths `(depth[s], depth[s + 1]]` and a column's value there is
/// `value[s] + (d − depth[s]) · slope[s]`. Piece 0 also covers every depth before the
/// first (at the first row's values); the last piece (after the last depth) is zero with a
/// negative cut-off, so nothing is added there.
#[derive(Debug, Clone, Default)]
struct Segments {
    comps: usize,
    depth: Vec<f32>,
    /// IDD × cut-off compensation / 2π, Gy·mm² per ion.
    idd: Vec<f32>,
    idd_slope: Vec<f32>,
    /// Cut-off radius², mm² (`f32::MAX` without a cut-off).
    cut: Vec<f32>,
    cut_slope: Vec<f32>,
    /// The larger cut-off radius² of each piece's two ends.
    cut_max: Vec<f32>,
    sigma: [Vec<f32>; MAX_COMPONENTS],
    sigma_slope: [Vec<f32>; MAX_COMPONENTS],
    /// Weights of components 1.. (index 0 unused).
    weight: [Vec<f32>; MAX_COMPONENTS],
    weight_slope: [Vec<f32>; MAX_COMPONENTS],
    sigma_initial_sq_mm2: f32,
}

/// One piece's row, each column in every lane (the same piece for all, or each lane's own).
struct Row<const C: usize> {
    depth: V,
    idd: V,
    idd_slope: V,
    cut: V,
    cut_slope: V,
    sigma: [V; C],
    sigma_slope: [V; C],
    weight: [V; C],
    weight_slope: [V; C],
}

impl Segments {
    fn new(k: &PencilKernel) -> Self {
        let n = k.depths_mm.len();
        let comps = k.sigma_water_mm.len();
        let d = &k.depths_mm;
        // Value and slope of a column on each piece; the last piece is `last`, flat.
        let pieces = |v: &[f64], last: f32| -> (Vec<f32>, Vec<f32>) {
            let mut value = Vec::with_capacity(n);
            let mut slope = Vec::with_capacity(n);
            for s in 0..n - 1 {
                let len = d[s + 1] - d[s];
                value.push(v[s] as f32);
                // A zero-length piece is never chosen (a depth lies strictly after its start).
                slope.push(if len > 0.0 {
                    ((v[s + 1] - v[s]) / len) as f32
                } else {
                    0.0
                });
            }
            value.push(last);
            slope.push(0.0);
            (value, slope)
        };
        let idd: Vec<f64> = k
            .idd_gy_mm2
            .iter()
            .map(|v| v * 0.5 * std::f64::consts::FRAC_1_PI)
            .collect();
        let (idd, idd_slope) = pieces(&idd, 0.0);
        // Without a cut-off the radii are infinite: nothing is cut.
        let cut: Vec<f64> = k
            .cutoff_sq_mm2
            .iter()
            .map(|&c| if c.is_finite() { c } else { f64::from(f32::MAX) })
            .collect();
        let (cut, cut_slope) = pieces(&cut, -1.0);
        let cut_max = (0..n)
            .map(|s| {
                if s + 1 < n {
                    cut[s].max(cut[s] + (d[s + 1] - d[s]) as f32 * cut_slope[s])
                } else {
                    cut[s]
                }
            })
            .collect();
        let mut sigma: [Vec<f32>; MAX_COMPONENTS] = Default::default();
        let mut sigma_slope: [Vec<f32>; MAX_COMPONENTS] = Default::default();
        let mut weight: [Vec<f32>; MAX_COMPONENTS] = Default::default();
        let mut weight_slope: [Vec<f32>; MAX_COMPONENTS] = Default::default();
        for c in 0..comps {
            (sigma[c], sigma_slope[c]) = pieces(&k.sigma_water_mm[c], 1.0);
            if c > 0 {
                (weight[c], weight_slope[c]) = pieces(&k.weights[c - 1], 0.0);
            }
        }
        Segments {
            comps,
            depth: d.iter().map(|&x| x as f32).collect(),
            idd,
            idd_slope,
            cut,
            cut_slope,
            cut_max,
            sigma,
            sigma_slope,
            weight,
            weight_slope,
            sigma_initial_sq_mm2: k.sigma_initial_sq_mm2 as f32,
        }
    }

    /// The piece holding depth `d`, walking from `s`: the first tabulated depth ≥ `d` is
    /// `s + 1`, as [`PencilKernel::dose_gy_per_ion`]'s `partition_point` finds it (piece 0
    /// before the table, the last piece after it).
    #[inline]
    fn piece_from(&self, mut s: usize, d: f32) -> usize {
        let n = self.depth.len();
        while s + 1 < n && self.depth[s + 1] < d {
            s += 1;
        }
        while s > 0 && self.depth[s] >= d {
            s -= 1;
        }
        s
    }

    /// Piece `s`'s row in every lane.
    #[inline(always)]
    fn row<const C: usize>(&self, s: usize) -> Row<C> {
        let splat = V::splat;
        Row {
            depth: splat(self.depth[s]),
            idd: splat(self.idd[s]),
            idd_slope: splat(self.idd_slope[s]),
            cut: splat(self.cut[s]),
            cut_slope: splat(self.cut_slope[s]),
            sigma: std::array::from_fn(|c| splat(self.sigma[c][s])),
            sigma_slope: std::array::from_fn(|c| splat(self.sigma_slope[c][s])),
            weight: std::array::from_fn(|c| if c > 0 { splat(self.weight[c][s]) } else { V::ZERO }),
            weight_slope: std::array::from_fn(|c| {
                if c > 0 {
                    splat(self.weight_slope[c][s])
                } else {
                    V::ZERO
                }
            }),
        }
    }

    /// Per lane, `hi`'s column where `take_hi` is set, else `lo`'s.
    #[inline(always)]
    fn blend<const C: usize>(take_hi: V, hi: &Row<C>, lo: &Row<C>) -> Row<C> {
        let b = |h: V, l: V| take_hi.blend(h, l);
        Row {
            depth: b(hi.depth, lo.depth),
            idd: b(hi.idd, lo.idd),
            idd_slope: b(hi.idd_slope, lo.idd_slope),
            cut: b(hi.cut, lo.cut),
            cut_slope: b(hi.cut_slope, lo.cut_slope),
            sigma: std::array::from_fn(|c| b(hi.sigma[c], lo.sigma[c])),
            sigma_slope: std::array::from_fn(|c| b(hi.sigma_slope[c], lo.sigma_slope[c])),
            weight: std::array::from_fn(|c| b(hi.weight[c], lo.weight[c])),
            weight_slope: std::array::from_fn(|c| b(hi.weight_slope[c], lo.weight_slope[c])),
        }
    }

    /// Lane `l`'s row from piece `s[l]`.
    #[inline(always)]
    fn rows<const C: usize>(&self, s: &[usize; LANES]) -> Row<C> {
        let lanes = |v: &[f32]| V::from(std::array::from_fn::<f32, LANES, _>(|l| v[s[l]]));
        Row {
            depth: lanes(&self.depth),
            idd: lanes(&self.idd),
            idd_slope: lanes(&self.idd_slope),
            cut: lanes(&self.cut),
            cut_slope: lanes(&self.cut_slope),
            sigma: std::array::from_fn(|c| lanes(&self.sigma[c])),
            sigma_slope: std::array::from_fn(|c| lanes(&self.sigma_slope[c])),
            weight: std::array::from_fn(|c| if c > 0 { lanes(&self.weight[c]) } else { V::ZERO }),
            weight_slope: std::array::from_fn(|c| {
                if c > 0 {
                    lanes(&self.weight_slope[c])
                } else {
                    V::ZERO
                }
            }),
        }
    }

    /// Dose per ion × `scale` at depths `d` and radii² `r_sq` on `row`: the lateral sum of
    /// Gaussians, zero beyond the cut-off. The exponentials are [`exp2_nonpositive`] (relative
    /// error < 3e-6).
    #[inline(always)]
    fn eval<const C: usize>(&self, row: &Row<C>, d: V, r_sq: V) -> V {
        use wide::CmpLe;
        // Before the table: its first row.
        let x = (d - row.depth).fast_max(V::ZERO);
        let cut = row.cut + x * row.cut_slope;
        let idd = row.idd + x * row.idd_slope;
        let var0 = V::splat(self.sigma_initial_sq_mm2);
        let mut rest = V::ONE;
        let mut lateral = V::ZERO;
        for c in (0..C).rev() {
            let w = if c == 0 {
                rest
            } else {
                let w = row.weight[c] + x * row.weight_slope[c];
                rest -= w;
                w
            };
            let s = row.sigma[c] + x * row.sigma_slope[c];
            let inv = V::ONE / (s * s + var0);
            // exp(−r²/2σ²) as 2^(r² · (−log₂e / 2σ²)).
            let g = w * inv * exp2_nonpositive(r_sq * (inv * V::splat(-0.5 * std::f32::consts::LOG2_E)));
            lateral = if c + 1 == C { g } else { lateral + g };
        }
        (idd * lateral) & r_sq.cmp_le(cut)
    }

    fn add_spot<const C: usize>(&self, near: &Near, particles: f64, depth_offset_mm: f64, acc: &mut [f32]) {
        use wide::CmpLt;
        let n = self.depth.len();
        let last_mm = self.depth[n - 1];
        let offset = V::splat(depth_offset_mm as f32);
        let scale = V::splat(particles as f32);
        let lane = V::from(std::array::from_fn::<f32, LANES, _>(|l| l as f32));
        let load = |v: &[f32], j: usize| {
            let mut a = [0.0f32; LANES];
            a.copy_from_slice(&v[j..j + LANES]);
            V::from(a)
        };
        let mut hint = 0;
        for plane in &near.planes {
            let lo = plane.shallowest_mm + depth_offset_mm as f32;
            if lo > last_mm {
                break;
            }
            let hi = plane.deepest_mm + depth_offset_mm as f32;
            let s_lo = self.piece_from(hint, lo);
            let s_hi = self.piece_from(s_lo, hi);
            hint = s_lo;
            // The largest cut-off radius² in the plane's depths: the bins beyond it are out.
            let cut_max = if s_lo == s_hi {
                let at = |d: f32| self.cut[s_lo] + (d - self.depth[s_lo]).max(0.0) * self.cut_slope[s_lo];
                at(lo).max(at(hi))
            } else {
                self.cut_max[s_lo..=s_hi].iter().copied().fold(f32::MIN, f32::max)
            };
            if cut_max < 0.0 {
                continue;
            }
            let bins = radial_bin(cut_max, near.inv_radial_bin_mm2);
            let (start, end) = (plane.start as usize, plane.bin_end[bins] as usize);
            // Whole chunks of lanes, then the rest with the lanes past `end` (other voxels)
            // masked out.
            let whole = start + (end - start) / LANES * LANES;
            let tail = lane.cmp_lt(V::splat((end - whole) as f32));
            let add = |acc: &mut [f32], j: usize, dose: V| {
                let sum = (load(acc, j) + dose).to_array();
                acc[j..j + LANES].copy_from_slice(&sum);
            };
            if s_lo == s_hi {
                // The offset folded into the piece's start, the particles into its IDD.
                let mut row = self.row::<C>(s_lo);
                row.depth -= offset;
                row.idd *= scale;
                row.idd_slope *= scale;
                // Exact chunks, so that the loop carries no bounds checks.
                let chunks = near.depth_mm[start..whole]
                    .chunks_exact(LANES)
                    .zip(near.r_sq_mm2[start..whole].chunks_exact(LANES))
                    .zip(acc[start..whole].chunks_exact_mut(LANES));
                for ((d, r), a) in chunks {
                    let sum = (load(a, 0) + self.eval(&row, load(d, 0), load(r, 0))).to_array();
                    a.copy_from_slice(&sum);
                }
                if whole < end {
                    let dose = self.eval(&row, load(&near.depth_mm, whole), load(&near.r_sq_mm2, whole));
                    add(acc, whole, dose & tail);
                }
            } else if s_hi == s_lo + 1 {
                // Two pieces (a tabulated depth inside the plane's span, common where the
                // table is dense): both rows prepared once, each lane takes the deeper one
                // past that depth, as `piece_from` would choose.
                let prepared = |s: usize| {
                    let mut row = self.row::<C>(s);
                    row.depth -= offset;
                    row.idd *= scale;
                    row.idd_slope *= scale;
                    row
                };
                let (row_lo, row_hi) = (prepared(s_lo), prepared(s_hi));
                let knot = V::splat(self.depth[s_hi]);
                let each = |j: usize| {
                    let d = load(&near.depth_mm, j);
                    let row = Self::blend(knot.cmp_lt(d + offset), &row_hi, &row_lo);
                    self.eval(&row, d, load(&near.r_sq_mm2, j))
                };
                for j in (start..whole).step_by(LANES) {
                    add(acc, j, each(j));
                }
                if whole < end {
                    add(acc, whole, each(whole) & tail);
                }
            } else {
                let each = |j: usize| {
                    let d = load(&near.depth_mm, j);
                    let da = (d + offset).to_array();
                    let s = std::array::from_fn(|l| {
                        let mut s = s_lo;
                        while s < s_hi && self.depth[s + 1] < da[l] {
                            s += 1;
                        }
                        s
                    });
                    let mut row = self.rows::<C>(&s);
                    row.depth -= offset;
                    row.idd *= scale;
                    row.idd_slope *= scale;
                    self.eval(&row, d, load(&near.r_sq_mm2, j))
                };
                for j in (start..whole).step_by(LANES) {
                    add(acc, j, each(j));
                }
                if whole < end {
                    add(acc, whole, each(whole) & tail);
                }
            }
        }
    }
}

/// The dose-grid voxels near one ray, structure of arrays, grouped by grid plane in order of
/// increasing depth along the ray and within a plane by radial bin; `LANES` zero entries
/// follow the last voxel, so that a whole chunk of lanes can always be read.
#[derive(Debug, Default)]
pub(crate) struct Near {
    /// Offsets in the dose grid.
    pub(crate) offset: Vec<u32>,
    /// Water-equivalent depths, mm.
    pub(crate) depth_mm: Vec<f32>,
    /// Squared distances from the ray, mm².
    pub(crate) r_sq_mm2: Vec<f32>,
    /// The planes, in order of increasing depth.
    pub(crate) planes: Vec<Plane>,
    /// Radial bins per mm² of r² (0: one bin, for an infinite radius).
    pub(crate) inv_radial_bin_mm2: f32,
}

impl Near {
    /// Voxels, padding excluded.
    pub(crate) fn len(&self) -> usize {
        self.offset.len().saturating_sub(LANES)
    }
}

/// One grid plane's voxels in [`Near`]: radial bin `b` (r² in `[b, b + 1)` bin widths, the
/// last bin open) ends at `bin_end[b]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plane {
    pub(crate) start: u32,
    pub(crate) bin_end: [u32; RADIAL_BINS],
    pub(crate) shallowest_mm: f32,
    pub(crate) deepest_mm: f32,
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

    /// The bounded exponential against f64's `exp2`, over every argument the Gaussians
    /// take inside any cut-off and far beyond (down to 2⁻¹²⁰), on a fine grid that crosses
    /// each rounding boundary of the range reduction.
    #[test]
    fn base_2_exponential_is_within_3e_6_relative() {
        let mut worst = 0.0f64;
        for i in 0..=1_200_000 {
            let y = -(i as f32) * 1e-4;
            let got = exp2_nonpositive(V::splat(y)).to_array()[0];
            let want = f64::from(y).exp2();
            worst = worst.max((f64::from(got) / want - 1.0).abs());
        }
        assert!(worst < 3e-6, "largest relative error {worst:e}");
        // Below the clamp: tiny and finite, never a wrapped exponent.
        let far = exp2_nonpositive(V::splat(-1000.0)).to_array()[0];
        assert!(far > 0.0 && far < 1e-37, "{far}");
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
