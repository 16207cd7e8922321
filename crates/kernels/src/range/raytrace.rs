//! Exact ray tracing through an oriented voxel grid.
//!
//! The ray is carried into continuous index space shifted by ½, `u = P⁻¹(p − origin) + ½`, so
//! voxel `v` spans `[v, v+1)` on each axis and the volume box is `[0, n]³` whatever the grid's
//! direction cosines. Because `P⁻¹ = diag(1/s)·Dᵀ` is linear, the ray parameter `t` stays in
//! patient millimetres. The box is clipped with the slab method, then voxels are walked in
//! the Amanatides–Woo order, each plane crossing computed exactly from the ray origin
//! (`t = (plane − u₀)/d`, never accumulated), so lengths do not drift along long rays.
//!
//! A ray lying exactly in a voxel boundary plane (direction component 0, position on an
//! integer plane) is the limit of rays on either side: it gets the mean RSP of the voxels on
//! both sides (a missing side, outside the volume, counts as 0). Rays that miss, start or end
//! inside, graze edges or corners, or have a degenerate direction give finite results and
//! never panic.

use super::hlut::Hlut;
use crate::units::{PointMm, VectorMm};
use crate::volume::{CtVolume, Volume};

/// Below this many voxels of drift over the traced span a direction component counts as
/// zero, and a position this close to an integer plane counts as lying in it.
const PLANE_EPS: f64 = 1e-9;

/// A half-line `origin + t·direction`, `t ≥ 0` in mm, `direction` a unit vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ray {
    /// Start point, patient mm.
    pub origin: PointMm,
    /// Unit direction (all zeros for a degenerate ray, which hits nothing).
    pub direction: VectorMm,
}

impl Ray {
    /// A ray from `origin` along `direction` (normalized here; a zero or non-finite direction
    /// gives a degenerate ray that traverses nothing).
    pub fn new(origin: PointMm, direction: VectorMm) -> Self {
        let n = direction.norm();
        let direction = if n.is_finite() && n > 0.0 {
            direction / n
        } else {
            VectorMm::zeros()
        };
        Ray { origin, direction }
    }

    /// The ray from `a` towards `b`, and the distance `|b − a|`.
    pub fn through(a: &PointMm, b: &PointMm) -> (Self, f64) {
        let d = b - a;
        (Ray::new(*a, d), d.norm())
    }

    /// Point at parameter `t_mm`.
    pub fn at(&self, t_mm: f64) -> PointMm {
        self.origin + self.direction * t_mm
    }
}

/// Cumulative WEPL along a ray: `(t_mm, wepl_mm)` at volume entry (WEPL 0) and at every voxel
/// exit. Empty when the ray misses. Reused across frames: [`trace_into`] clears it and keeps
/// its capacity. Read it through [`RayProfile::view`].
///
/// The samples live in the first `len` entries of buffers that only ever grow, so tracing
/// writes them by index without a capacity check per sample.
#[derive(Debug, Clone, Default)]
pub struct RayProfile {
    t_buf: Vec<f64>,
    w_buf: Vec<f64>,
    len: usize,
    /// The trace stopped at a WEPL limit before leaving the volume.
    truncated: bool,
}

impl PartialEq for RayProfile {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}

impl RayProfile {
    /// An empty profile with room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        RayProfile {
            t_buf: vec![0.0; n],
            w_buf: vec![0.0; n],
            len: 0,
            truncated: false,
        }
    }
    /// Forgets the samples, keeps the buffers.
    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }
    /// The samples of the last trace.
    pub fn view(&self) -> ProfileView<'_> {
        ProfileView {
            t: &self.t_buf[..self.len],
            w: &self.w_buf[..self.len],
            truncated: self.truncated,
        }
    }
    fn record(&mut self, traced: Traced) {
        self.len = traced.len;
        self.truncated = traced.truncated;
    }
}

impl SampleSink for RayProfile {
    fn buffers(&mut self, bound: usize) -> (&mut [f64], &mut [f64]) {
        if self.t_buf.len() < bound {
            self.t_buf.resize(bound, 0.0);
            self.w_buf.resize(bound, 0.0);
        }
        (&mut self.t_buf[..bound], &mut self.w_buf[..bound])
    }
}

/// One ray's samples, wherever they are stored (a [`RayProfile`], or the packed store of a
/// [`SpotTracer`](super::SpotTracer)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileView<'a> {
    pub(crate) t: &'a [f64],
    pub(crate) w: &'a [f64],
    pub(crate) truncated: bool,
}

impl<'a> ProfileView<'a> {
    /// Whether the trace stopped at its WEPL limit ([`trace_until`]) before leaving the
    /// volume: samples end at the first voxel exit whose cumulative WEPL reached the limit,
    /// and nothing is known beyond [`Self::exit_t_mm`].
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
    /// Whether the ray missed the volume (or the segment has no length inside it).
    pub fn is_empty(&self) -> bool {
        self.t.len() < 2
    }
    /// Sample parameters, mm (entry, then voxel exits).
    pub fn t_mm(&self) -> &'a [f64] {
        self.t
    }
    /// Cumulative WEPL at each sample, mm.
    pub fn wepl_mm(&self) -> &'a [f64] {
        self.w
    }
    /// Parameter where the ray enters the volume.
    pub fn entry_t_mm(&self) -> Option<f64> {
        self.t.first().copied()
    }
    /// Parameter where the ray leaves the volume (or the segment ends, or the trace stopped).
    pub fn exit_t_mm(&self) -> Option<f64> {
        self.t.last().copied()
    }
    /// Total WEPL, mm (0 for a miss).
    pub fn total_wepl_mm(&self) -> f64 {
        self.w.last().copied().unwrap_or(0.0)
    }
    /// Geometric length inside the volume, mm.
    pub fn geometric_mm(&self) -> f64 {
        match (self.t.first(), self.t.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        }
    }

    /// Cumulative WEPL from the ray origin to parameter `t_mm` (0 before entry, total after
    /// exit, linear inside a voxel). For a truncated profile "total" is the WEPL where the
    /// trace stopped; callers check [`Self::is_truncated`] before reading past the end.
    pub fn wepl_at_depth(&self, t_mm: f64) -> f64 {
        let t = self.t;
        if t.len() < 2 || t_mm.is_nan() || t_mm <= t[0] {
            return 0.0;
        }
        let k = t.partition_point(|&x| x < t_mm);
        if k >= t.len() {
            return self.total_wepl_mm();
        }
        let (t0, t1) = (t[k - 1], t[k]);
        let (w0, w1) = (self.w[k - 1], self.w[k]);
        if t1 <= t0 {
            return w1;
        }
        w0 + (w1 - w0) * (t_mm - t0) / (t1 - t0)
    }

    /// [`Self::wepl_at_depth`] only where the trace covers `t_mm` (entry ≤ `t_mm` ≤ exit, or
    /// where a stopped trace stopped); `None` for a miss or outside.
    pub fn wepl_within_mm(&self, t_mm: f64) -> Option<f64> {
        let (entry, exit) = (self.entry_t_mm()?, self.exit_t_mm()?);
        if self.is_empty() || !(t_mm >= entry && t_mm <= exit) {
            return None;
        }
        Some(self.wepl_at_depth(t_mm))
    }

    /// First parameter where cumulative WEPL reaches `wepl_mm`; `None` if the ray leaves the
    /// volume first (or misses it, or `wepl_mm` is not finite). `wepl_mm ≤ 0` gives the entry.
    pub fn depth_at_wepl(&self, wepl_mm: f64) -> Option<f64> {
        let w = self.w;
        if w.len() < 2 || !wepl_mm.is_finite() || wepl_mm > self.total_wepl_mm() {
            return None;
        }
        if wepl_mm <= 0.0 {
            return Some(self.t[0]);
        }
        let k = w.partition_point(|&x| x < wepl_mm).max(1);
        let (w0, w1) = (w[k - 1], w[k]);
        let (t0, t1) = (self.t[k - 1], self.t[k]);
        if w1 <= w0 {
            return Some(t1);
        }
        Some(t0 + (t1 - t0) * (wepl_mm - w0) / (w1 - w0))
    }
}

/// What one trace wrote: its sample count (0 for a miss) and whether it stopped at its WEPL
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Traced {
    pub len: usize,
    pub truncated: bool,
}

/// Where a trace writes its samples: `buffers(bound)` lends `t` and `wepl` slices of exactly
/// `bound` entries (see [`sample_bound`]), of which the trace fills a prefix.
pub(crate) trait SampleSink {
    fn buffers(&mut self, bound: usize) -> (&mut [f64], &mut [f64]);
}

/// Most samples a trace through `grid` can write: the entry, then one per plane crossing,
/// and a ray crosses each plane at most once.
pub(crate) fn sample_bound(grid: &crate::geometry::Grid) -> usize {
    grid.dims().iter().sum::<usize>() + 2
}

/// WEPL and geometric length of a straight segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentWepl {
    /// Water-equivalent path length, mm.
    pub wepl_mm: f64,
    /// Geometric length inside the volume, mm.
    pub geometric_mm: f64,
}

/// WEPL of the segment `a → b` through an RSP volume.
pub fn wepl_between(rsp: &Volume<f32>, a: &PointMm, b: &PointMm) -> SegmentWepl {
    let (ray, len) = Ray::through(a, b);
    let mut p = RayProfile::default();
    trace_into(rsp, &ray, len, &mut p);
    let p = p.view();
    SegmentWepl {
        wepl_mm: p.total_wepl_mm(),
        geometric_mm: p.geometric_mm(),
    }
}

/// The ray in shifted index space, clipped to the volume box and `[0, t_max]`.
struct Walk {
    n: [usize; 3],
    /// `u` at `t = 0`.
    u0: [f64; 3],
    /// `du/dt`, per mm.
    d: [f64; 3],
    /// Clipped parameter span.
    t_in: f64,
    t_out: f64,
    /// Integer plane each in-plane axis lies in, if any.
    in_plane: [Option<i64>; 3],
}

impl Walk {
    fn new(grid: &crate::geometry::Grid, ray: &Ray, t_max_mm: f64) -> Option<Walk> {
        let t_max = if t_max_mm.is_nan() { 0.0 } else { t_max_mm };
        if ray.direction == VectorMm::zeros() || t_max <= 0.0 {
            return None;
        }
        if !ray.origin.iter().all(|v| v.is_finite()) {
            return None;
        }
        let m = grid.patient_to_index_matrix();
        let u0v = m * (ray.origin - grid.origin_mm());
        let dv = m * ray.direction;
        let n = grid.dims();
        let mut u0 = [0.0; 3];
        let mut d = [0.0; 3];
        let mut t_in = 0.0f64;
        let mut t_out = t_max;
        let mut in_plane = [None; 3];
        // A finite span for deciding what "parallel" means, even for an unbounded ray: the
        // box diagonal plus the distance to it.
        let span = if t_max.is_finite() {
            t_max
        } else {
            let reach: f64 = (0..3).map(|a| u0v[a].abs() + n[a] as f64).sum();
            reach * grid.spacing_mm().iter().cloned().fold(0.0, f64::max)
        };
        for a in 0..3 {
            u0[a] = u0v[a] + 0.5;
            d[a] = dv[a];
            let hi = n[a] as f64;
            if (d[a] * span).abs() < PLANE_EPS {
                d[a] = 0.0;
                let r = u0[a].round();
                if (u0[a] - r).abs() < PLANE_EPS && r >= 0.0 && r <= hi {
                    u0[a] = r;
                    in_plane[a] = Some(r as i64);
                } else if !(u0[a] > 0.0 && u0[a] < hi) {
                    return None;
                }
            } else {
                let inv = 1.0 / d[a];
                let (ta, tb) = ((0.0 - u0[a]) * inv, (hi - u0[a]) * inv);
                t_in = t_in.max(ta.min(tb));
                t_out = t_out.min(ta.max(tb));
            }
        }
        // NaN-safe: a NaN span is a miss too.
        if t_out.partial_cmp(&t_in) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        Some(Walk {
            n,
            u0,
            d,
            t_in,
            t_out,
            in_plane,
        })
    }

    /// Walks the voxels, calling `visit(base_offset, t_exit, length)` per voxel until it
    /// returns `false`. For an in-plane axis the base index is the voxel below the plane (may
    /// be −1).
    #[inline(always)]
    fn run(&self, mut visit: impl FnMut(isize, f64, f64) -> bool) {
        let n = self.n;
        let stride = [1isize, n[0] as isize, (n[0] * n[1]) as isize];
        let mut idx = [0i64; 3];
        let mut step = [0i64; 3];
        let mut t_next = [f64::INFINITY; 3];
        let mut inv = [0.0; 3];
        let mut off = 0isize;
        for a in 0..3 {
            if let Some(m) = self.in_plane[a] {
                idx[a] = m - 1;
            } else if self.d[a] == 0.0 {
                idx[a] = (self.u0[a].floor() as i64).clamp(0, n[a] as i64 - 1);
            } else {
                let u = self.u0[a] + self.t_in * self.d[a];
                let v = if self.d[a] > 0.0 {
                    u.floor()
                } else {
                    u.ceil() - 1.0
                };
                idx[a] = (v as i64).clamp(0, n[a] as i64 - 1);
                step[a] = if self.d[a] > 0.0 { 1 } else { -1 };
                inv[a] = 1.0 / self.d[a];
                let plane = if step[a] > 0 { idx[a] + 1 } else { idx[a] };
                t_next[a] = (plane as f64 - self.u0[a]) * inv[a];
            }
            off += idx[a] as isize * stride[a];
        }
        // Per-axis state in scalars (not arrays indexed by the stepping axis) so it stays in
        // registers; the crossing parameter is still computed exactly from the ray origin.
        let t_out = self.t_out;
        let (mut tx, mut ty, mut tz) = (t_next[0], t_next[1], t_next[2]);
        let (mut ix, mut iy, mut iz) = (idx[0], idx[1], idx[2]);
        let plane = |i: usize, v: i64| if step[i] > 0 { v + 1 } else { v };
        let (mut px, mut py, mut pz) = (plane(0, ix), plane(1, iy), plane(2, iz));
        let lim = [n[0] as i64, n[1] as i64, n[2] as i64];
        let mut t = self.t_in;
        macro_rules! cross {
            ($a:literal, $tn:ident, $i:ident, $p:ident) => {{
                let t_exit = if $tn < t_out { $tn } else { t_out };
                let seg = t_exit - t;
                if seg > 0.0 {
                    if !visit(off, t_exit, seg) {
                        break;
                    }
                    t = t_exit;
                }
                if t_exit >= t_out {
                    break;
                }
                $i += step[$a];
                if $i < 0 || $i >= lim[$a] {
                    break;
                }
                off += step[$a] as isize * stride[$a];
                $p += step[$a];
                $tn = ($p as f64 - self.u0[$a]) * inv[$a];
            }};
        }
        loop {
            if tx <= ty && tx <= tz {
                cross!(0, tx, ix, px);
            } else if ty <= tz {
                cross!(1, ty, iy, py);
            } else {
                cross!(2, tz, iz, pz);
            }
        }
    }
}

/// Traces `ray` over `t ∈ [0, t_max_mm]` (use `f64::INFINITY` for the whole half-line) through
/// an RSP volume, replacing `profile`'s samples.
pub fn trace_into(rsp: &Volume<f32>, ray: &Ray, t_max_mm: f64, profile: &mut RayProfile) {
    trace_until(rsp, ray, t_max_mm, f64::INFINITY, profile);
}

/// [`trace_into`] that stops at the first voxel exit where the cumulative WEPL reaches
/// `stop_wepl_mm` (the profile is then [truncated](ProfileView::is_truncated)). Every sample
/// it keeps is bit-identical to the full trace's: the stop only drops the tail.
pub fn trace_until(rsp: &Volume<f32>, ray: &Ray, t_max_mm: f64, stop_wepl_mm: f64, profile: &mut RayProfile) {
    let traced = trace_rsp_samples(rsp, ray, t_max_mm, stop_wepl_mm, profile);
    profile.record(traced);
}

/// [`trace_until`] into any sample store.
pub(crate) fn trace_rsp_samples(
    rsp: &Volume<f32>,
    ray: &Ray,
    t_max_mm: f64,
    stop_wepl_mm: f64,
    sink: &mut impl SampleSink,
) -> Traced {
    trace_generic(
        rsp.grid(),
        F32Voxels(rsp.as_slice()),
        ray,
        t_max_mm,
        stop_wepl_mm,
        sink,
    )
}

/// [`trace_until`] straight on a CT frame, converting each visited voxel through `hlut`'s
/// dense lookup: the same RSP values as tracing `hlut.convert(ct)`, so the same profile, but
/// without converting the voxels no ray visits.
pub fn trace_ct_until(
    ct: &CtVolume,
    hlut: &Hlut,
    ray: &Ray,
    t_max_mm: f64,
    stop_wepl_mm: f64,
    profile: &mut RayProfile,
) {
    let traced = trace_ct_samples(ct, hlut, ray, t_max_mm, stop_wepl_mm, profile);
    profile.record(traced);
}

/// [`trace_ct_until`] into any sample store.
pub(crate) fn trace_ct_samples(
    ct: &CtVolume,
    hlut: &Hlut,
    ray: &Ray,
    t_max_mm: f64,
    stop_wepl_mm: f64,
    sink: &mut impl SampleSink,
) -> Traced {
    let voxels = CtVoxels {
        hu: ct.as_slice(),
        lut: hlut.dense_lut(),
    };
    trace_generic(ct.grid(), voxels, ray, t_max_mm, stop_wepl_mm, sink)
}

/// Where the walk reads RSP from: a converted RSP volume, or CT + lookup.
trait Voxels: Copy {
    /// RSP of the voxel at linear offset `i`, `None` outside the storage.
    fn rsp(self, i: usize) -> Option<f32>;
}

#[derive(Clone, Copy)]
struct F32Voxels<'a>(&'a [f32]);

impl Voxels for F32Voxels<'_> {
    #[inline(always)]
    fn rsp(self, i: usize) -> Option<f32> {
        self.0.get(i).copied()
    }
}

#[derive(Clone, Copy)]
struct CtVoxels<'a> {
    hu: &'a [i16],
    lut: &'a [f32; 65536],
}

impl Voxels for CtVoxels<'_> {
    #[inline(always)]
    fn rsp(self, i: usize) -> Option<f32> {
        // `hu + 32768` as a u16: always inside the 65 536-entry table.
        self.hu
            .get(i)
            .map(|&hu| self.lut[usize::from(hu as u16 ^ 0x8000)])
    }
}

fn trace_generic(
    grid: &crate::geometry::Grid,
    data: impl Voxels,
    ray: &Ray,
    t_max_mm: f64,
    stop_wepl_mm: f64,
    sink: &mut impl SampleSink,
) -> Traced {
    const MISS: Traced = Traced {
        len: 0,
        truncated: false,
    };
    let Some(walk) = Walk::new(grid, ray, t_max_mm) else {
        return MISS;
    };
    // Sized to the bound once, a reused store never allocates after its first frame.
    let (tb, wb) = sink.buffers(sample_bound(grid));
    tb[0] = walk.t_in;
    wb[0] = 0.0;
    let mut len = 1;
    let mut w = 0.0f64;
    let mut truncated = false;
    if walk.in_plane.iter().all(Option::is_none) {
        walk.run(|off, t_exit, seg| {
            // In-box walk: `off` is a valid index by construction.
            w += seg * data.rsp(off as usize).unwrap_or(0.0) as f64;
            tb[len] = t_exit;
            wb[len] = w;
            len += 1;
            truncated = w >= stop_wepl_mm;
            !truncated
        });
    } else {
        let n = walk.n;
        let stride = [1isize, n[0] as isize, (n[0] * n[1]) as isize];
        // Neighbour combinations across every in-plane axis (at most 8, so on the stack);
        // invalid ones contribute 0.
        let mut combos = [(0isize, [0i64; 3]); 8];
        let mut count = 1;
        for a in 0..3 {
            if walk.in_plane[a].is_some() {
                for c in 0..count {
                    let (o, mut s) = combos[c];
                    s[a] = 1;
                    combos[count + c] = (o + stride[a], s);
                }
                count *= 2;
            }
        }
        let weight = 1.0 / count as f64;
        let mut valid = [0isize; 8];
        let mut n_valid = 0;
        for (o, s) in &combos[..count] {
            let ok = (0..3).all(|a| match walk.in_plane[a] {
                Some(m) => {
                    let v = m - 1 + s[a];
                    v >= 0 && v < n[a] as i64
                }
                None => true,
            });
            if ok {
                valid[n_valid] = *o;
                n_valid += 1;
            }
        }
        let valid = &valid[..n_valid];
        walk.run(|off, t_exit, seg| {
            let mut r = 0.0f64;
            for &d in valid {
                let o = off + d;
                if o >= 0 {
                    r += data.rsp(o as usize).unwrap_or(0.0) as f64;
                }
            }
            w += seg * r * weight;
            tb[len] = t_exit;
            wb[len] = w;
            len += 1;
            truncated = w >= stop_wepl_mm;
            !truncated
        });
    }
    if len < 2 {
        MISS
    } else {
        Traced { len, truncated }
    }
}

/// The voxels a ray crosses over `[0, t_max_mm]`, as `([i, j, k], length_mm)` (for checks and
/// tools; the hot path uses [`trace_into`]). For a ray in a boundary plane, the voxel on the
/// lower side of the plane is reported (index may be −1).
pub fn voxel_segments(grid: &crate::geometry::Grid, ray: &Ray, t_max_mm: f64) -> Vec<([i64; 3], f64)> {
    let mut out = Vec::new();
    if let Some(walk) = Walk::new(grid, ray, t_max_mm) {
        let [nx, ny, _] = grid.dims();
        let (nx, nxy) = (nx as isize, (nx * ny) as isize);
        walk.run(|off, _t, seg| {
            let k = off.div_euclid(nxy);
            let r = off - k * nxy;
            let j = r.div_euclid(nx);
            let i = r - j * nx;
            out.push(([i as i64, j as i64, k as i64], seg));
            true
        });
    }
    out
}
