//! Per-frame spot WEPL with buffers allocated once.
//!
//! A [`SpotTracer`] is built from a plan: spots of a beam that share an `(x, y)` position (over
//! all its layers) share one ray, traced once per frame from `upstream_mm` above the
//! isocenter plane through the whole volume. Each spot's planned Bragg-peak depth comes from
//! its layer energy (CSDA range in water, or a facility table) and is computed at
//! construction; per frame only the rays are traced and each spot's target point — where
//! the cumulative WEPL reaches its planned depth — is looked up. Nothing allocates per frame
//! once the profile buffers have grown to the longest ray.
//!
//! A ray is traced only until its cumulative WEPL passes the deepest planned depth of its
//! spots plus [`SpotTracerOptions::wepl_margin`]: no target lies beyond, so the stop drops
//! only samples nobody reads and every target is bit-identical to a full trace. The margin
//! bounds how far past the deepest target [`SpotTracer::wepl_at_t_mm`] can still answer
//! (beyond it gives `None`); `f64::INFINITY` traces whole rays.
//!
//! Frames can be traced from an RSP volume ([`SpotTracer::trace_frame`]) or straight from
//! the CT frame and the HU → RSP lookup ([`SpotTracer::trace_frame_ct`]), which converts only
//! the voxels the rays visit instead of the whole frame.
//!
//! For the adapt stage a frame can also be traced with every ray of a beam moved by a
//! per-beam offset ([`SpotTracer::trace_frame_ct_moved_at`], [`SpotTracer::trace_frame_moved_at`]):
//! the lateral part of the tumor shift, so the rays pass through the moved target, and each
//! spot's WEPL is measured at a given depth as its ray is traced. Same buffers, same stop
//! rule, no allocation. When the target also rotates, each ray gets its own offset
//! ([`SpotTracer::trace_frame_ct_rays_moved_at`]).

use std::collections::HashMap;

use super::beam::BeamGeometry;
use super::facility::FacilityTable;
use super::hlut::Hlut;
use super::range_energy::RangeEnergyTable;
use super::raytrace::{
    sample_bound, trace_ct_samples, trace_rsp_samples, ProfileView, Ray, SampleSink, Traced,
};
use super::RangeError;
use crate::plan::IonPlan;
use crate::units::{MmWe, PointMm, VectorMm};
use crate::volume::{CtVolume, Volume};

/// How a spot's energy becomes its planned Bragg-peak depth in water.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DepthModel {
    /// CSDA range in water from [`RangeEnergyTable`] for the beam's ion.
    Csda,
    /// A facility's measured energy ↔ Bragg-peak depth table.
    Facility(FacilityTable),
}

/// Options for [`SpotTracer`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SpotTracerOptions {
    /// Room virtual SADs `[x, y]`, mm, for beams whose plan gives none (infinite: parallel).
    pub default_sad_mm: [f64; 2],
    /// Where rays start, mm above the isocenter plane (must clear the patient).
    pub upstream_mm: f64,
    /// Depth model.
    pub depth_model: DepthModel,
    /// WEPL traced past each ray's deepest planned depth (default 20 mm w.e.; ≥ 0, infinite:
    /// whole rays).
    pub wepl_margin: MmWe,
    /// Threads rays are traced on, the calling one included (default 1: a frame then never
    /// allocates; 2 splits the rays in two halves, at the cost of one scoped thread spawn
    /// per frame). Results are identical for any count.
    pub threads: usize,
}

impl SpotTracerOptions {
    /// Options with the room's default virtual SADs, rays from 1 m upstream, CSDA depths.
    pub fn new(default_sad_mm: [f64; 2]) -> Self {
        SpotTracerOptions {
            default_sad_mm,
            upstream_mm: 1000.0,
            depth_model: DepthModel::Csda,
            wepl_margin: MmWe(20.0),
            threads: 1,
        }
    }
    /// Sets how many threads trace a frame.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
    /// Sets how far past each ray's deepest planned depth it is traced.
    pub fn with_wepl_margin(mut self, margin: MmWe) -> Self {
        self.wepl_margin = margin;
        self
    }
    /// Sets where rays start.
    pub fn with_upstream_mm(mut self, upstream_mm: f64) -> Self {
        self.upstream_mm = upstream_mm;
        self
    }
    /// Sets the depth model.
    pub fn with_depth_model(mut self, model: DepthModel) -> Self {
        self.depth_model = model;
        self
    }
}

/// A spot's place in the plan and its planned depth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpotRef {
    /// Beam index in the plan.
    pub beam: usize,
    /// Layer index in the beam.
    pub layer: usize,
    /// Spot index in the layer.
    pub spot: usize,
    /// Index of its ray.
    pub ray: usize,
    /// Layer energy, MeV/u.
    pub energy_mev_u: f64,
    /// Planned Bragg-peak depth in water: water-equivalent, unlike the geometric ray
    /// parameters ([`SpotTracer::target_t_mm`]) it is read beside.
    pub planned_depth: MmWe,
}

/// Traces a plan's spot rays through RSP frames, reusing its buffers.
#[derive(Debug, Clone)]
pub struct SpotTracer {
    rays: Vec<Ray>,
    profiles: ProfileStore,
    spots: Vec<SpotRef>,
    /// Per ray `r`, its spots are `ray_spots[ray_spot_start[r]..ray_spot_start[r + 1]]`, so
    /// targets are located right after the ray is traced, while its profile is in cache.
    ray_spot_start: Vec<usize>,
    ray_spots: Vec<usize>,
    /// Target parameters in `ray_spots` order (scattered into `target_t_mm` after tracing).
    slot_target_t_mm: Vec<Option<f64>>,
    /// Per slot (`ray_spots` order): the parameter to measure WEPL at during the trace (NaN:
    /// none), and what was measured there (NaN: not covered by the trace).
    slot_query_t_mm: Vec<f64>,
    slot_wepl_mm: Vec<f64>,
    /// Threads per frame.
    threads: usize,
    /// Per ray: cumulative WEPL where its trace may stop, mm.
    stop_wepl_mm: Vec<f64>,
    /// Per ray: index of its beam in the plan (for per-beam offsets).
    ray_beam: Vec<usize>,
    /// Number of beams in the plan.
    beams: usize,
    /// Per spot: ray parameter of the target point in the last frame.
    target_t_mm: Vec<Option<f64>>,
}

impl SpotTracer {
    /// Builds rays and planned depths for every spot of `plan`.
    pub fn new(plan: &IonPlan, options: &SpotTracerOptions) -> Result<Self, RangeError> {
        if !(options.upstream_mm.is_finite() && options.upstream_mm > 0.0) {
            return Err(RangeError::BadBeamGeometry {
                beam: -1,
                reason: format!(
                    "upstream start must be finite and > 0 mm, got {}",
                    options.upstream_mm
                ),
            });
        }
        let wepl_margin_mm = options.wepl_margin.get();
        if wepl_margin_mm.is_nan() || wepl_margin_mm < 0.0 {
            return Err(RangeError::BadBeamGeometry {
                beam: -1,
                reason: format!("WEPL margin must be ≥ 0 mm, got {wepl_margin_mm}"),
            });
        }
        let mut rays = Vec::new();
        let mut ray_keys: Vec<(usize, f64, f64)> = Vec::new();
        let mut spots = Vec::with_capacity(plan.spot_count());
        let mut tables: HashMap<crate::units::Ion, RangeEnergyTable> = HashMap::new();
        for (b, beam) in plan.beams.iter().enumerate() {
            let geo = BeamGeometry::from_beam(beam, options.default_sad_mm)?;
            let mut by_pos: HashMap<(u64, u64), usize> = HashMap::new();
            for (l, layer) in beam.layers.iter().enumerate() {
                let depth = match &options.depth_model {
                    DepthModel::Csda => {
                        let table = match tables.entry(beam.ion) {
                            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(RangeEnergyTable::new(beam.ion)?)
                            }
                        };
                        table.range_mm(layer.energy_mev_u)?
                    }
                    DepthModel::Facility(f) => f.depth_mm(layer.energy_mev_u)?,
                };
                for (s, spot) in layer.spots.iter().enumerate() {
                    if !(spot.x_mm.is_finite() && spot.y_mm.is_finite()) {
                        return Err(RangeError::BadBeamGeometry {
                            beam: beam.number,
                            reason: format!("layer {l} spot {s}: non-finite position"),
                        });
                    }
                    // +0.0 and −0.0 are the same position.
                    let key = ((spot.x_mm + 0.0).to_bits(), (spot.y_mm + 0.0).to_bits());
                    let ray = *by_pos.entry(key).or_insert_with(|| {
                        rays.push(geo.spot_ray(spot.x_mm, spot.y_mm, options.upstream_mm));
                        ray_keys.push((b, spot.y_mm, spot.x_mm));
                        rays.len() - 1
                    });
                    spots.push(SpotRef {
                        beam: b,
                        layer: l,
                        spot: s,
                        ray,
                        energy_mev_u: layer.energy_mev_u,
                        planned_depth: depth,
                    });
                }
            }
        }
        let profiles = ProfileStore::new(rays.len());
        let target_t_mm = vec![None; spots.len()];
        // Rays in tracing order: per beam, rows of equal BEV y with x varying fastest, so
        // neighbouring rays reuse the cache lines the previous one loaded. Ray indices are
        // tracing order from here on.
        let mut order: Vec<usize> = (0..rays.len()).collect();
        order.sort_by(|&p, &q| {
            let (a, b) = (ray_keys[p], ray_keys[q]);
            a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.total_cmp(&b.2))
        });
        let mut rank = vec![0; rays.len()];
        for (pos, &r) in order.iter().enumerate() {
            rank[r] = pos;
        }
        let rays: Vec<Ray> = order.iter().map(|&r| rays[r]).collect();
        for s in &mut spots {
            s.ray = rank[s.ray];
        }
        let mut ray_spots: Vec<usize> = (0..spots.len()).collect();
        ray_spots.sort_by_key(|&n| spots[n].ray);
        let mut ray_spot_start = vec![0; rays.len() + 1];
        for s in &spots {
            ray_spot_start[s.ray + 1] += 1;
        }
        for r in 0..rays.len() {
            ray_spot_start[r + 1] += ray_spot_start[r];
        }
        let slot_target_t_mm = vec![None; spots.len()];
        let slot_query_t_mm = vec![f64::NAN; spots.len()];
        let slot_wepl_mm = vec![f64::NAN; spots.len()];
        let mut stop_wepl_mm = vec![f64::NEG_INFINITY; rays.len()];
        for s in &spots {
            stop_wepl_mm[s.ray] = stop_wepl_mm[s.ray].max((s.planned_depth + options.wepl_margin).get());
        }
        let mut ray_beam = vec![0; rays.len()];
        for s in &spots {
            ray_beam[s.ray] = s.beam;
        }
        Ok(SpotTracer {
            ray_beam,
            beams: plan.beams.len(),
            threads: options.threads,
            ray_spot_start,
            ray_spots,
            slot_target_t_mm,
            slot_query_t_mm,
            slot_wepl_mm,
            rays,
            profiles,
            spots,
            stop_wepl_mm,
            target_t_mm,
        })
    }

    /// Traces every ray through `rsp` and locates every spot's target point.
    pub fn trace_frame(&mut self, rsp: &Volume<f32>) {
        self.trace_with(rsp.grid(), &[], false, |ray, stop, p| {
            trace_rsp_samples(rsp, ray, f64::INFINITY, stop, p)
        });
    }

    /// [`Self::trace_frame`] on the RSP volume `hlut.convert(ct)`, without building it: each
    /// visited voxel is converted through the same lookup, so the results are identical.
    pub fn trace_frame_ct(&mut self, ct: &CtVolume, hlut: &Hlut) {
        self.trace_with(ct.grid(), &[], false, |ray, stop, p| {
            trace_ct_samples(ct, hlut, ray, f64::INFINITY, stop, p)
        });
    }

    fn check_offsets(&self, beam_offsets_mm: &[VectorMm]) -> Result<(), RangeError> {
        if beam_offsets_mm.len() != self.beams {
            return Err(RangeError::BadBeamGeometry {
                beam: -1,
                reason: format!(
                    "{} ray offsets given for a plan of {} beams",
                    beam_offsets_mm.len(),
                    self.beams
                ),
            });
        }
        if let Some(b) = beam_offsets_mm
            .iter()
            .position(|o| !o.iter().all(|v| v.is_finite()))
        {
            return Err(RangeError::BadBeamGeometry {
                beam: -1,
                reason: format!(
                    "non-finite ray offset for beam index {b}: {:?}",
                    beam_offsets_mm[b]
                ),
            });
        }
        Ok(())
    }

    /// Number of beams in the plan this tracer was built from.
    pub fn beam_count(&self) -> usize {
        self.beams
    }

    /// `offsets` empty: rays as built; else one offset per beam, or per ray when `per_ray`
    /// (checked by the caller).
    fn trace_with(
        &mut self,
        grid: &crate::geometry::Grid,
        offsets: &[VectorMm],
        per_ray: bool,
        trace: impl Fn(&Ray, f64, &mut Slot<'_>) -> Traced + Sync,
    ) {
        let chunk = Chunk {
            offsets,
            per_ray,
            ray_beam: &self.ray_beam,
            rays: &self.rays,
            stop_wepl_mm: &self.stop_wepl_mm,
            profiles: self.profiles.chunk(sample_bound(grid)),
            spot_start: &self.ray_spot_start,
            ray_spots: &self.ray_spots,
            spots: &self.spots,
            targets: &mut self.slot_target_t_mm,
            queries: &self.slot_query_t_mm,
            answers: &mut self.slot_wepl_mm,
        };
        if self.threads >= 2 && self.rays.len() >= 2 {
            let (a, b) = chunk.split(self.rays.len() / 2);
            std::thread::scope(|scope| {
                let trace = &trace;
                scope.spawn(move || b.run(trace));
                a.run(trace);
            });
        } else {
            chunk.run(&trace);
        }
        for (&n, &t) in self.ray_spots.iter().zip(&self.slot_target_t_mm) {
            self.target_t_mm[n] = t;
        }
    }

    /// The spots, in plan order (beam, layer, spot).
    pub fn spots(&self) -> &[SpotRef] {
        &self.spots
    }
    /// The distinct rays.
    pub fn rays(&self) -> &[Ray] {
        &self.rays
    }
    /// A ray's cumulative WEPL profile from the last frame.
    pub fn profile(&self, ray: usize) -> Option<ProfileView<'_>> {
        self.profiles.get(ray)
    }
    /// Target parameters (mm along each spot's ray) from the last frame; `None` where the ray
    /// leaves the volume before reaching the planned depth.
    pub fn target_t_mm(&self) -> &[Option<f64>] {
        &self.target_t_mm
    }
    /// A spot's target point from the last frame.
    pub fn target_point_mm(&self, spot: usize) -> Option<PointMm> {
        let s = self.spots.get(spot)?;
        let t = (*self.target_t_mm.get(spot)?)?;
        Some(self.rays[s.ray].at(t))
    }
    /// WEPL in the last frame from the ray start to parameter `t_mm` on a spot's ray (e.g. a
    /// planning-CT target point, to see how the range moved). `None` past the point where the
    /// trace stopped (more than the WEPL margin beyond the ray's deepest planned depth).
    /// Geometric in, water-equivalent out: the types keep the two apart.
    pub fn wepl_at_t_mm(&self, spot: usize, t_mm: f64) -> Option<MmWe> {
        let s = self.spots.get(spot)?;
        let p = self.profiles.get(s.ray)?;
        if p.is_truncated() && p.exit_t_mm().is_some_and(|end| t_mm.is_nan() || t_mm > end) {
            return None;
        }
        Some(MmWe(p.wepl_at_depth(t_mm)))
    }

    /// [`Self::wepl_at_t_mm`] only where the last frame's trace actually covers `t_mm`:
    /// `None` before the ray enters the volume, after it leaves it (or after the trace
    /// stopped), or when it misses. A target outside the traced span has no measured WEPL,
    /// and the adapt stage must hold rather than read the total as if it were the answer.
    pub fn wepl_at_t_within_mm(&self, spot: usize, t_mm: f64) -> Option<MmWe> {
        let s = self.spots.get(spot)?;
        self.profiles.get(s.ray)?.wepl_within_mm(t_mm).map(MmWe)
    }

    /// A copy that keeps no profiles: its traces write each ray's samples into one scratch
    /// buffer, so a frame touches a few pages instead of megabytes, and `profile`,
    /// `wepl_at_t_mm` and `wepl_at_t_within_mm` answer `None`. Targets and
    /// [`Self::trace_frame_ct_moved_at`] work as before. The pipeline's range stage uses it.
    pub fn without_profiles(&self) -> SpotTracer {
        SpotTracer {
            rays: self.rays.clone(),
            profiles: ProfileStore::scratch(self.rays.len()),
            spots: self.spots.clone(),
            ray_spot_start: self.ray_spot_start.clone(),
            ray_spots: self.ray_spots.clone(),
            slot_target_t_mm: self.slot_target_t_mm.clone(),
            slot_query_t_mm: self.slot_query_t_mm.clone(),
            slot_wepl_mm: self.slot_wepl_mm.clone(),
            threads: self.threads,
            stop_wepl_mm: self.stop_wepl_mm.clone(),
            ray_beam: self.ray_beam.clone(),
            beams: self.beams,
            target_t_mm: self.target_t_mm.clone(),
        }
    }

    /// Traces `ct` (through `hlut`) with every ray of beam `b` moved by `beam_offsets_mm[b]`
    /// (patient mm; the direction is kept) and measures, for every spot `n` (plan order), the
    /// WEPL to parameter `query_t_mm[n]` on its moved ray, as [`Self::wepl_at_t_within_mm`]
    /// would after the trace (NaN where that is `None`), into `wepl_mm` (cleared first). Ray
    /// parameters keep their meaning: `t` on a moved ray is measured from its moved start;
    /// profiles (if kept) and targets then describe the moved rays. Each ray's spots are
    /// measured right after the ray is traced, from samples still in cache, so it needs no
    /// kept profiles. Errors (nothing traced) unless there is exactly one finite offset per
    /// beam and one query per spot.
    pub fn trace_frame_ct_moved_at(
        &mut self,
        ct: &CtVolume,
        hlut: &Hlut,
        beam_offsets_mm: &[VectorMm],
        query_t_mm: &[f64],
        wepl_mm: &mut Vec<f32>,
    ) -> Result<(), RangeError> {
        self.trace_moved_at(ct.grid(), beam_offsets_mm, query_t_mm, wepl_mm, |ray, stop, p| {
            trace_ct_samples(ct, hlut, ray, f64::INFINITY, stop, p)
        })
    }

    /// [`Self::trace_frame_ct_moved_at`] on an RSP frame.
    pub fn trace_frame_moved_at(
        &mut self,
        rsp: &Volume<f32>,
        beam_offsets_mm: &[VectorMm],
        query_t_mm: &[f64],
        wepl_mm: &mut Vec<f32>,
    ) -> Result<(), RangeError> {
        self.trace_moved_at(
            rsp.grid(),
            beam_offsets_mm,
            query_t_mm,
            wepl_mm,
            |ray, stop, p| trace_rsp_samples(rsp, ray, f64::INFINITY, stop, p),
        )
    }

    /// [`Self::trace_frame_ct_moved_at`] with one offset per *ray* (`ray_offsets_mm[r]` moves
    /// ray `r` of [`Self::rays`]) instead of per beam: when the target rotates, the rays of
    /// one beam move differently. Errors (nothing traced) unless there is exactly one finite
    /// offset per ray and one query per spot.
    pub fn trace_frame_ct_rays_moved_at(
        &mut self,
        ct: &CtVolume,
        hlut: &Hlut,
        ray_offsets_mm: &[VectorMm],
        query_t_mm: &[f64],
        wepl_mm: &mut Vec<f32>,
    ) -> Result<(), RangeError> {
        self.trace_rays_moved_at(ct.grid(), ray_offsets_mm, query_t_mm, wepl_mm, |ray, stop, p| {
            trace_ct_samples(ct, hlut, ray, f64::INFINITY, stop, p)
        })
    }

    /// [`Self::trace_frame_ct_rays_moved_at`] on an RSP frame.
    pub fn trace_frame_rays_moved_at(
        &mut self,
        rsp: &Volume<f32>,
        ray_offsets_mm: &[VectorMm],
        query_t_mm: &[f64],
        wepl_mm: &mut Vec<f32>,
    ) -> Result<(), RangeError> {
        self.trace_rays_moved_at(rsp.grid(), ray_offsets_mm, query_t_mm, wepl_mm, |ray, stop, p| {
            trace_rsp_samples(rsp, ray, f64::INFINITY, stop, p)
        })
    }

    fn trace_rays_moved_at(
        &mut self,
        grid: &crate::geometry::Grid,
        ray_offsets_mm: &[VectorMm],
        query_t_mm: &[f64],
        wepl_mm: &mut Vec<f32>,
        trace: impl Fn(&Ray, f64, &mut Slot<'_>) -> Traced + Sync,
    ) -> Result<(), RangeError> {
        if ray_offsets_mm.len() != self.rays.len() {
            return Err(RangeError::BadBeamGeometry {
                beam: -1,
                reason: format!(
                    "{} ray offsets given for a plan of {} rays",
                    ray_offsets_mm.len(),
                    self.rays.len()
                ),
            });
        }
        if let Some(r) = ray_offsets_mm
            .iter()
            .position(|o| !o.iter().all(|v| v.is_finite()))
        {
            return Err(RangeError::BadBeamGeometry {
                beam: -1,
                reason: format!("non-finite offset for ray {r}: {:?}", ray_offsets_mm[r]),
            });
        }
        self.set_queries(query_t_mm)?;
        self.trace_with(grid, ray_offsets_mm, true, trace);
        self.answers_into(wepl_mm);
        Ok(())
    }

    fn trace_moved_at(
        &mut self,
        grid: &crate::geometry::Grid,
        beam_offsets_mm: &[VectorMm],
        query_t_mm: &[f64],
        wepl_mm: &mut Vec<f32>,
        trace: impl Fn(&Ray, f64, &mut Slot<'_>) -> Traced + Sync,
    ) -> Result<(), RangeError> {
        self.check_offsets(beam_offsets_mm)?;
        self.set_queries(query_t_mm)?;
        self.trace_with(grid, beam_offsets_mm, false, trace);
        self.answers_into(wepl_mm);
        Ok(())
    }

    fn set_queries(&mut self, query_t_mm: &[f64]) -> Result<(), RangeError> {
        if query_t_mm.len() != self.spots.len() {
            return Err(RangeError::BadBeamGeometry {
                beam: -1,
                reason: format!(
                    "{} query depths given for a plan of {} spots",
                    query_t_mm.len(),
                    self.spots.len()
                ),
            });
        }
        for (slot, &n) in self.slot_query_t_mm.iter_mut().zip(&self.ray_spots) {
            *slot = query_t_mm[n];
        }
        Ok(())
    }

    /// Moves the slots' answers to plan order and forgets the queries, so a later trace
    /// without queries measures nothing.
    fn answers_into(&mut self, wepl_mm: &mut Vec<f32>) {
        wepl_mm.clear();
        wepl_mm.resize(self.spots.len(), f32::NAN);
        for (&n, &w) in self.ray_spots.iter().zip(&self.slot_wepl_mm) {
            wepl_mm[n] = w as f32;
        }
        self.slot_query_t_mm.fill(f64::NAN);
    }
}

/// A contiguous run of rays with their profiles and their spots' target slots.
struct Chunk<'a> {
    /// Per-beam ray offsets (empty: none), or per ray of this chunk when `per_ray`.
    offsets: &'a [VectorMm],
    per_ray: bool,
    /// Beam of every ray of the plan (indexed by absolute ray number).
    ray_beam: &'a [usize],
    rays: &'a [Ray],
    stop_wepl_mm: &'a [f64],
    profiles: StoreChunk<'a>,
    /// `ray_spot_start` entries of these rays plus the one after (absolute slot numbers).
    spot_start: &'a [usize],
    ray_spots: &'a [usize],
    spots: &'a [SpotRef],
    /// Target slots from `spot_start[0]` on.
    targets: &'a mut [Option<f64>],
    /// Query parameters and answers, slots from `spot_start[0]` on.
    queries: &'a [f64],
    answers: &'a mut [f64],
}

impl<'a> Chunk<'a> {
    /// Rays `..r` and `r..`.
    fn split(self, r: usize) -> (Chunk<'a>, Chunk<'a>) {
        let (rays0, rays1) = self.rays.split_at(r);
        let (beam0, beam1) = self.ray_beam.split_at(r);
        let (stop0, stop1) = self.stop_wepl_mm.split_at(r);
        let (prof0, prof1) = self.profiles.split(r);
        let cut = self.spot_start[r] - self.spot_start[0];
        let (t0, t1) = self.targets.split_at_mut(cut);
        let (q0, q1) = self.queries.split_at(cut);
        let (a0, a1) = self.answers.split_at_mut(cut);
        let (off0, off1) = if self.per_ray && !self.offsets.is_empty() {
            self.offsets.split_at(r)
        } else {
            (self.offsets, self.offsets)
        };
        (
            Chunk {
                offsets: off0,
                per_ray: self.per_ray,
                ray_beam: beam0,
                rays: rays0,
                stop_wepl_mm: stop0,
                profiles: prof0,
                spot_start: &self.spot_start[..=r],
                ray_spots: self.ray_spots,
                spots: self.spots,
                targets: t0,
                queries: q0,
                answers: a0,
            },
            Chunk {
                offsets: off1,
                per_ray: self.per_ray,
                ray_beam: beam1,
                rays: rays1,
                stop_wepl_mm: stop1,
                profiles: prof1,
                spot_start: &self.spot_start[r..],
                ray_spots: self.ray_spots,
                spots: self.spots,
                targets: t1,
                queries: q1,
                answers: a1,
            },
        )
    }

    fn run(mut self, trace: &impl Fn(&Ray, f64, &mut Slot<'_>) -> Traced) {
        let base = self.spot_start[0];
        for (r, ray) in self.rays.iter().enumerate() {
            let traced = {
                let mut slot = self.profiles.next_slot();
                let off = if self.per_ray {
                    self.offsets.get(r)
                } else {
                    self.offsets.get(self.ray_beam[r])
                };
                match off {
                    Some(off) => {
                        let moved = Ray {
                            origin: ray.origin + off,
                            direction: ray.direction,
                        };
                        trace(&moved, self.stop_wepl_mm[r], &mut slot)
                    }
                    None => trace(ray, self.stop_wepl_mm[r], &mut slot),
                }
            };
            let p = self.profiles.record(r, traced);
            let (a, b) = (self.spot_start[r], self.spot_start[r + 1]);
            for (slot, &n) in (a - base..b - base).zip(&self.ray_spots[a..b]) {
                self.targets[slot] = p.depth_at_wepl(self.spots[n].planned_depth.get());
                let q = self.queries[slot];
                self.answers[slot] = if q.is_nan() {
                    f64::NAN
                } else {
                    p.wepl_within_mm(q).unwrap_or(f64::NAN)
                };
            }
        }
    }
}

/// Every ray's profile from the last frame, packed back to back.
///
/// One buffer per ray, sized for the longest possible trace, would spread a frame's few
/// megabytes of samples over thousands of mostly empty pages. On a virtual machine whose host
/// makes idle guest pages slow to touch again, each costs microseconds on its first touch
/// after ~100 ms, and the range stage then paid ~12 ms per frame at 10 Hz for those touches
/// alone (ARCHITECTURE.md, "Memory touched per frame"). Packed, a frame touches only the
/// pages its samples fill; a scratch store ([`SpotTracer::without_profiles`]) keeps none.
///
/// Room is reserved for the worst case (every ray crossing every plane) but never written
/// beyond what traces fill, so untouched pages cost no memory.
struct ProfileStore {
    /// Whether profiles are kept; if not, every ray is traced into the same scratch room.
    keep: bool,
    t_mm: Vec<f64>,
    wepl_mm: Vec<f64>,
    /// Samples per ray the buffers have room for ([`sample_bound`] of the largest grid yet).
    bound: usize,
    /// Per ray: where its samples start, how many, whether truncated.
    start: Vec<usize>,
    len: Vec<usize>,
    truncated: Vec<bool>,
}

impl ProfileStore {
    fn new(rays: usize) -> Self {
        ProfileStore {
            keep: true,
            t_mm: Vec::new(),
            wepl_mm: Vec::new(),
            bound: 0,
            start: vec![0; rays],
            len: vec![0; rays],
            truncated: vec![false; rays],
        }
    }

    /// A store that keeps nothing: room for one ray per tracing thread.
    fn scratch(rays: usize) -> Self {
        ProfileStore {
            keep: false,
            ..ProfileStore::new(rays)
        }
    }

    fn get(&self, ray: usize) -> Option<ProfileView<'_>> {
        if !self.keep {
            return None;
        }
        let (start, len) = (*self.start.get(ray)?, self.len[ray]);
        Some(ProfileView {
            t: &self.t_mm[start..start + len],
            w: &self.wepl_mm[start..start + len],
            truncated: self.truncated[ray],
        })
    }

    /// The whole store for one frame on a grid with this [`sample_bound`]; allocates only when
    /// the bound grows (the first frame, or a larger grid).
    fn chunk(&mut self, bound: usize) -> StoreChunk<'_> {
        if bound > self.bound {
            // Kept: room for every ray. Scratch: one ray's room per half (two threads at most).
            let n = bound * if self.keep { self.start.len() } else { 2 };
            // Zeroed allocations come as untouched pages from the OS, unlike `resize`.
            self.t_mm = vec![0.0; n];
            self.wepl_mm = vec![0.0; n];
            self.len.fill(0);
            self.bound = bound;
        }
        StoreChunk {
            keep: self.keep,
            t_mm: &mut self.t_mm,
            wepl_mm: &mut self.wepl_mm,
            bound: self.bound,
            first_sample: 0,
            used: 0,
            start: &mut self.start,
            len: &mut self.len,
            truncated: &mut self.truncated,
        }
    }
}

impl Clone for ProfileStore {
    /// Copies the stored samples only, so a clone touches no more memory than the original.
    fn clone(&self) -> Self {
        if !self.keep {
            return ProfileStore::scratch(self.start.len());
        }
        let mut copy = ProfileStore::new(self.start.len());
        let mut chunk = copy.chunk(self.bound);
        for r in 0..self.start.len() {
            let p = self.get(r).unwrap_or(ProfileView {
                t: &[],
                w: &[],
                truncated: false,
            });
            let mut slot = chunk.next_slot();
            let (t, w) = slot.buffers(p.t.len());
            t.copy_from_slice(p.t);
            w.copy_from_slice(p.w);
            chunk.record(
                r,
                Traced {
                    len: p.t.len(),
                    truncated: p.truncated,
                },
            );
        }
        copy
    }
}

impl std::fmt::Debug for ProfileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileStore")
            .field("keep", &self.keep)
            .field("rays", &self.start.len())
            .field("samples", &self.len.iter().sum::<usize>())
            .field("bound", &self.bound)
            .finish()
    }
}

/// The part of a [`ProfileStore`] that a run of rays writes: `bound` samples of room per ray,
/// filled from the front.
struct StoreChunk<'a> {
    keep: bool,
    t_mm: &'a mut [f64],
    wepl_mm: &'a mut [f64],
    bound: usize,
    /// Index in the whole store of `t_mm[0]`.
    first_sample: usize,
    /// Samples written so far.
    used: usize,
    /// Per ray of this chunk.
    start: &'a mut [usize],
    len: &'a mut [usize],
    truncated: &'a mut [bool],
}

impl<'a> StoreChunk<'a> {
    /// Rays `..r` and `r..`, each with room for its rays.
    fn split(self, r: usize) -> (StoreChunk<'a>, StoreChunk<'a>) {
        let cut = if self.keep { r * self.bound } else { self.bound };
        let (t0, t1) = self.t_mm.split_at_mut(cut);
        let (w0, w1) = self.wepl_mm.split_at_mut(cut);
        let (s0, s1) = self.start.split_at_mut(r);
        let (l0, l1) = self.len.split_at_mut(r);
        let (u0, u1) = self.truncated.split_at_mut(r);
        (
            StoreChunk {
                keep: self.keep,
                t_mm: t0,
                wepl_mm: w0,
                bound: self.bound,
                first_sample: self.first_sample,
                used: 0,
                start: s0,
                len: l0,
                truncated: u0,
            },
            StoreChunk {
                keep: self.keep,
                t_mm: t1,
                wepl_mm: w1,
                bound: self.bound,
                first_sample: self.first_sample + cut,
                used: 0,
                start: s1,
                len: l1,
                truncated: u1,
            },
        )
    }

    /// Room for the next ray's samples: at least `bound`, since each earlier ray of the chunk
    /// used at most its own `bound`.
    fn next_slot(&mut self) -> Slot<'_> {
        Slot {
            t_mm: &mut self.t_mm[self.used..],
            wepl_mm: &mut self.wepl_mm[self.used..],
        }
    }

    /// Files what the trace into [`Self::next_slot`] wrote as ray `r`'s profile.
    fn record(&mut self, r: usize, traced: Traced) -> ProfileView<'_> {
        let at = self.used;
        if self.keep {
            self.start[r] = self.first_sample + at;
            self.len[r] = traced.len;
            self.truncated[r] = traced.truncated;
            self.used += traced.len;
        }
        ProfileView {
            t: &self.t_mm[at..at + traced.len],
            w: &self.wepl_mm[at..at + traced.len],
            truncated: traced.truncated,
        }
    }
}

/// Where one ray's trace writes in a [`StoreChunk`].
struct Slot<'a> {
    t_mm: &'a mut [f64],
    wepl_mm: &'a mut [f64],
}

impl SampleSink for Slot<'_> {
    fn buffers(&mut self, bound: usize) -> (&mut [f64], &mut [f64]) {
        (&mut self.t_mm[..bound], &mut self.wepl_mm[..bound])
    }
}
