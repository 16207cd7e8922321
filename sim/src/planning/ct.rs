//! The geometric planner on a user's CT: any CT series with a target ROI, planned the way
//! the phantom is ([`super::plan`]) — uniform spot grids over the target plus a margin in
//! the beam's-eye view, energy layers evenly spaced in water-equivalent depth — with the
//! target a rasterized ROI instead of an analytic sphere.
//!
//! For each beam every spot ray (diverging from the virtual sources, exactly as
//! [`ionguide::range::SpotTracer`] traces them) is traced through the planning CT's stopping
//! power, and walked through the target mask grown by the margin: each stretch of the ray
//! inside it gives a `[proximal, distal]` WEPL interval. Layer depths are
//! `d_min + n·layer_spacing` over all rays; a spot of a layer sits on every ray with an
//! interval containing that depth. The WEPL is counted from where the ray enters the CT, as
//! the pipeline's range stage counts it: outside the body outline the CT holds air, so this
//! is the WEPL from the skin wherever the skin is imaged. Where the CT's edge cuts the body
//! (a CT cropped around the target) the ray enters tissue at the edge: the summary counts
//! such rays, and the automatic beam choice avoids them.
//!
//! The body outline ([`super::body`]) is the structure set's BODY/EXTERNAL ROI, else found
//! from the CT. It decides three things: whether the target lies inside the patient at all;
//! where a ray meets the skin; and whether a ray crosses dense material outside the patient
//! (the couch, immobilisation, the other limb) on its way in.
//!
//! Default beams (`gantry_angles_deg: None`): gantry angles from −90° to 90° in 10° steps —
//! the source level with or above the table, so no beam comes up through the couch whatever
//! the patient's position — are scored on rays 5 mm apart over the target: an angle is kept
//! when at most 2 % of its rays cross dense material (> the outline threshold) outside the
//! body before the target; kept angles are ranked by the share of rays entering tissue at
//! the CT's edge (in steps of 10 %), then by the median WEPL to the target's near side — the
//! beams enter through the body on the target's side. The first beam is the best angle; each
//! further one is the best angle 60–120° from every beam chosen (30° or more when none is),
//! a cross-fire. Angles are rounded to the 10° grid.

use ionguide::dicom::ct::CtSeries;
use ionguide::geometry::Grid;
use ionguide::plan::{EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::raytrace::{trace_into, Ray, RayProfile};
use ionguide::range::{BeamGeometry, Hlut, PatientPosition, RangeEnergyTable};
use ionguide::structure::{ContourSkipReason, StructureSet};
use ionguide::units::{Ion, MmWe, PointMm};
use ionguide::volume::Volume;

use super::body::{body_outline, BodySource, BODY_THRESHOLD_HU};
use super::PlannerError;
use crate::uid::uid_from_seed;

/// Planner knobs for a user's CT.
#[derive(Debug, Clone, PartialEq)]
pub struct CtPlannerOptions {
    /// Ion species (1H, 4He, 12C, 16O or 20Ne).
    pub ion: Ion,
    /// Gantry angles, IEC 61217 degrees, couch 0; `None`: chosen (module documentation).
    pub gantry_angles_deg: Option<Vec<f64>>,
    /// How many beams to choose when the angles are not given.
    pub beams: usize,
    /// How the patient lies; `None`: the CT's Patient Position, else HFS.
    pub patient_position: Option<PatientPosition>,
    /// Spot grid spacing in the isocenter plane, mm; `None`: 1.5 mm, scaled up together with
    /// the layer spacing until the plan has at most `max_spots` spots.
    pub spot_spacing_mm: Option<f64>,
    /// Energy layer spacing, mm of water; `None`: 2 mm, scaled as the spot spacing.
    pub layer_spacing_mm: Option<f64>,
    /// The spot budget the automatic spacings aim for (the reference workload: 10,000).
    pub max_spots: usize,
    /// Margin around the target ROI the spots cover, mm (laterally and in depth).
    pub margin_mm: f64,
    /// The energies the machine delivers, MeV/u `[lowest, highest]`; `None`: the range
    /// table's span. A layer needing an energy outside is refused.
    pub energy_limits_mev_u: Option<[f64; 2]>,
    /// Threshold of the outline found from the CT, HU.
    pub body_threshold_hu: f64,
    /// Virtual source-axis distances [X, Y], mm, written into the plan.
    pub virtual_sad_mm: [f64; 2],
    /// Where spot rays start above the isocenter plane, mm (outside the patient).
    pub upstream_mm: f64,
    /// HU → relative stopping power table of the planning CT.
    pub hlut: Hlut,
    /// RT Plan Label.
    pub label: String,
    /// Seed of the plan's SOP Instance UID.
    pub seed: u64,
}

impl Default for CtPlannerOptions {
    /// Carbon, two automatic beams, automatic spacings for at most 10,000 spots, 3 mm margin,
    /// the range table's energies, the −400 HU outline, the phantom planner's SADs, upstream
    /// distance and HLUT (matRad's generic).
    fn default() -> Self {
        let p = super::PlannerOptions::default();
        CtPlannerOptions {
            ion: Ion::CARBON12,
            gantry_angles_deg: None,
            beams: 2,
            patient_position: None,
            spot_spacing_mm: None,
            layer_spacing_mm: None,
            max_spots: 10_000,
            margin_mm: p.lateral_margin_mm,
            energy_limits_mev_u: None,
            body_threshold_hu: BODY_THRESHOLD_HU,
            virtual_sad_mm: p.virtual_sad_mm,
            upstream_mm: p.upstream_mm,
            hlut: p.hlut,
            label: "IONGUIDE-GEO".into(),
            seed: 11,
        }
    }
}

/// What the planner chose and found, beside the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct CtPlanSummary {
    /// The target ROI.
    pub target_roi: String,
    /// Its volume on the CT, cm³.
    pub target_volume_cc: f64,
    /// The body outline's origin.
    pub body: BodySource,
    /// Share of the target's voxels inside the outline.
    pub target_inside_body: f64,
    /// Isocenter (the target's centroid), mm.
    pub isocenter_mm: PointMm,
    /// Patient position the beams are oriented by (DICOM code).
    pub patient_position: String,
    /// Spot spacing used, mm.
    pub spot_spacing_mm: f64,
    /// Layer spacing used, mm w.e.
    pub layer_spacing_mm: f64,
    /// Per beam.
    pub beams: Vec<BeamSummary>,
}

/// One planned beam.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamSummary {
    /// Gantry angle, degrees.
    pub gantry_deg: f64,
    /// Spots.
    pub spots: usize,
    /// Energy layers.
    pub layers: usize,
    /// Lowest and highest energy, MeV/u.
    pub energy_mev_u: [f64; 2],
    /// Shallowest and deepest layer depth, mm w.e.
    pub depth_mm_we: [f64; 2],
    /// Share of the beam's rays that enter tissue at the CT's edge (the skin not imaged
    /// there: depths count from the edge, as the pipeline counts them).
    pub entering_at_ct_edge: f64,
}

/// A plan and what was chosen for it.
#[derive(Debug, Clone, PartialEq)]
pub struct CtPlan {
    /// The plan, in the CT's Frame of Reference and Patient ID.
    pub plan: IonPlan,
    /// What was chosen and found.
    pub summary: CtPlanSummary,
}

/// Masks and volumes one plan works on.
struct Scene<'a> {
    grid: &'a Grid,
    hu: &'a [i16],
    rsp: Volume<f32>,
    body: Vec<u8>,
    target: Vec<u8>,
    grown: Vec<u8>,
    threshold_hu: f64,
    step_mm: f64,
    t_max_mm: f64,
}

/// A spot position whose ray crosses the grown target.
struct SpotRay {
    x_mm: f64,
    y_mm: f64,
    /// `[proximal, distal]` WEPL of each stretch inside the grown target, mm.
    wepl_mm: Vec<(f64, f64)>,
}

/// One ray's walk through the masks.
struct Walk {
    /// Stretches inside the mask walked, as ray parameters, mm.
    inside_t: Vec<(f64, f64)>,
    /// The first voxel the ray meets in the CT is inside the body.
    enters_at_edge: bool,
    /// Dense material outside the body before the first stretch.
    obstructed: bool,
}

impl Scene<'_> {
    fn voxel(&self, p: &PointMm) -> Option<usize> {
        let ijk = self.grid.patient_to_index(p);
        let [nx, ny, nz] = self.grid.dims();
        let r = ijk.map(|v| v.round());
        if r.iter()
            .zip([nx, ny, nz])
            .any(|(&v, n)| v < 0.0 || v > (n - 1) as f64)
        {
            return None;
        }
        Some(self.grid.offset(r[0] as usize, r[1] as usize, r[2] as usize))
    }

    /// Walks `ray` (already traced into `profile`) through `mask`.
    fn walk(&self, ray: &Ray, profile: &RayProfile, mask: &[u8]) -> Option<Walk> {
        let view = profile.view();
        let (t0, t1) = (view.entry_t_mm()?, view.exit_t_mm()?);
        if view.is_empty() {
            return None;
        }
        let mut inside_t = Vec::new();
        let mut open: Option<f64> = None;
        let mut enters_at_edge = None;
        let mut obstructed = false;
        let n = ((t1 - t0) / self.step_mm).ceil() as usize;
        for s in 0..=n {
            let t = (t0 + (s as f64 + 0.5) * self.step_mm).min(t1);
            let Some(o) = self.voxel(&ray.at(t)) else {
                continue;
            };
            let in_body = self.body[o] != 0;
            if enters_at_edge.is_none() {
                enters_at_edge = Some(in_body);
            }
            if inside_t.is_empty() && open.is_none() && !in_body && f64::from(self.hu[o]) > self.threshold_hu
            {
                obstructed = true;
            }
            match (mask[o] != 0, open) {
                (true, None) => open = Some(t - 0.5 * self.step_mm),
                (false, Some(a)) => {
                    inside_t.push((a, t - 0.5 * self.step_mm));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(a) = open {
            inside_t.push((a, t1));
        }
        Some(Walk {
            inside_t,
            enters_at_edge: enters_at_edge.unwrap_or(false),
            obstructed,
        })
    }

    /// The BEV square (half-width, mm, in the isocenter plane) that covers `mask`'s voxels.
    fn bev_half_width_mm(&self, geo: &BeamGeometry, mask: &[u8]) -> f64 {
        let [nx, ny, _] = self.grid.dims();
        let mut half: f64 = 0.0;
        for (o, _) in mask.iter().enumerate().filter(|(_, &m)| m != 0) {
            let ijk = [(o % nx) as f64, ((o / nx) % ny) as f64, (o / (nx * ny)) as f64];
            let d = self.grid.index_to_patient(ijk) - geo.isocenter_mm;
            half = half.max(d.dot(&geo.bev_x).abs()).max(d.dot(&geo.bev_y).abs());
        }
        // divergence widens the shadow; 10 % covers SADs down to ~1 m (missing rays are skipped)
        1.1 * half + self.grid.spacing_mm().iter().copied().fold(0.0, f64::max)
    }
}

/// Ray grid offsets `[-n, n]·spacing` covering `half_mm`.
fn offsets(half_mm: f64, spacing_mm: f64) -> Vec<f64> {
    let n = (half_mm / spacing_mm).ceil() as i64;
    (-n..=n).map(|i| i as f64 * spacing_mm).collect()
}

/// `target` grown by `margin_mm` (voxel centres within the margin of a target voxel centre).
fn grow(grid: &Grid, target: &[u8], margin_mm: f64) -> Vec<u8> {
    let [nx, ny, nz] = grid.dims();
    let sp = grid.spacing_mm();
    let r = sp.map(|s| (margin_mm / s).floor() as i64);
    let mut ball = Vec::new();
    for dk in -r[2]..=r[2] {
        for dj in -r[1]..=r[1] {
            for di in -r[0]..=r[0] {
                let d2 =
                    (di as f64 * sp[0]).powi(2) + (dj as f64 * sp[1]).powi(2) + (dk as f64 * sp[2]).powi(2);
                if d2 <= margin_mm * margin_mm {
                    ball.push([di, dj, dk]);
                }
            }
        }
    }
    let mut out = target.to_vec();
    let at = |i: i64, j: i64, k: i64| -> Option<usize> {
        (i >= 0 && j >= 0 && k >= 0 && (i as usize) < nx && (j as usize) < ny && (k as usize) < nz)
            .then(|| (k as usize * ny + j as usize) * nx + i as usize)
    };
    for (o, _) in target.iter().enumerate().filter(|(_, &m)| m != 0) {
        let (i, j, k) = ((o % nx) as i64, ((o / nx) % ny) as i64, (o / (nx * ny)) as i64);
        // only the surface grows the mask
        let interior = [
            (1, 0, 0),
            (-1, 0, 0),
            (0, 1, 0),
            (0, -1, 0),
            (0, 0, 1),
            (0, 0, -1),
        ]
        .iter()
        .all(|(a, b, c)| at(i + a, j + b, k + c).is_some_and(|n| target[n] != 0));
        if interior {
            continue;
        }
        for [di, dj, dk] in &ball {
            if let Some(n) = at(i + di, j + dj, k + dk) {
                out[n] = 1;
            }
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Plans `series` for its ROI `target_roi` of `structures`.
pub fn plan_ct(
    series: &CtSeries,
    structures: &StructureSet,
    target_roi: &str,
    options: &CtPlannerOptions,
) -> Result<CtPlan, PlannerError> {
    validate(options)?;
    let ct = &series.volume;
    let grid = ct.grid();
    let roi = structures
        .roi(target_roi)
        .map_err(|_| PlannerError::TargetNotFound {
            name: target_roi.to_string(),
            available: structures.names(),
        })?;
    let outside = |reason: String| PlannerError::TargetOutsideCt {
        roi: target_roi.to_string(),
        reason,
    };
    let raster = roi.rasterize(grid);
    let beyond_slices = raster
        .skipped
        .iter()
        .filter(|s| matches!(s.reason, ContourSkipReason::OutsideGrid { .. }))
        .count();
    let dims = grid.dims();
    let points_outside = roi
        .contours
        .iter()
        .flat_map(|c| &c.points_mm)
        .filter(|p| {
            let ijk = grid.patient_to_index(p);
            (0..2).any(|a| ijk[a] < -0.5 || ijk[a] > dims[a] as f64 - 0.5)
        })
        .count();
    if raster.voxels == 0 {
        return Err(outside(format!(
            "its {} contours cover no voxel of the CT",
            roi.contours.len()
        )));
    }
    if beyond_slices > 0 || points_outside > 0 {
        return Err(outside(format!(
            "{beyond_slices} of its {} contours lie beyond the CT's slices and {points_outside} contour points outside its field of view: the target is not wholly imaged",
            roi.contours.len()
        )));
    }
    let Some(iso) = raster.centroid_mm else {
        return Err(outside("no centroid".into()));
    };
    let body = body_outline(ct, structures, options.body_threshold_hu);
    let target = raster.mask.as_slice().to_vec();
    let inside_body = target
        .iter()
        .zip(body.mask.as_slice())
        .filter(|(t, b)| **t != 0 && **b != 0)
        .count() as f64
        / raster.voxels as f64;
    if inside_body < 0.5 {
        return Err(PlannerError::NoPathFromSkin {
            roi: target_roi.to_string(),
            reason: format!(
                "only {:.0}% of the target lies inside the body outline ({})",
                100.0 * inside_body,
                body.source
            ),
        });
    }
    let position = match options.patient_position {
        Some(p) => p,
        None => match series.meta.patient_position.as_deref() {
            Some(code) => PatientPosition::from_code(code).ok_or_else(|| PlannerError::BadOption {
                name: "patient_position",
                reason: format!("the CT's Patient Position {code:?} is not HFS, HFP, FFS or FFP: give one"),
            })?,
            None => PatientPosition::Hfs,
        },
    };
    let position_code = format!("{position:?}").to_ascii_uppercase();
    let grown = grow(grid, &target, options.margin_mm);
    let (lo, hi) = grid.bounds_mm();
    let diag = (hi - lo).norm() + (iso - grid.center_mm()).norm();
    let scene = Scene {
        grid,
        hu: ct.as_slice(),
        rsp: options.hlut.convert(ct),
        body: body.mask.as_slice().to_vec(),
        target,
        grown,
        threshold_hu: options.body_threshold_hu,
        step_mm: 0.5 * grid.spacing_mm().iter().copied().fold(f64::INFINITY, f64::min),
        t_max_mm: options.upstream_mm + diag,
    };
    let table =
        RangeEnergyTable::new(options.ion).map_err(|source| PlannerError::Range { beam: 0, source })?;
    let mut profile = RayProfile::with_capacity(2048);
    let angles = match &options.gantry_angles_deg {
        Some(a) => a.clone(),
        None => choose_angles(&scene, position, iso, options, target_roi, &mut profile)?,
    };
    let grown_cc = scene.grown.iter().filter(|&&m| m != 0).count() as f64 * grid.voxel_volume_mm3();
    let (spot_spacing_mm, layer_spacing_mm) = spacings(options, angles.len(), grown_cc);
    let limits = options
        .energy_limits_mev_u
        .unwrap_or([table.energy_span_mev_u().0, table.energy_span_mev_u().1]);
    let mut beams = Vec::with_capacity(angles.len());
    let mut summaries = Vec::with_capacity(angles.len());
    for (bi, &gantry) in angles.iter().enumerate() {
        let geo = BeamGeometry::new(position, gantry, 0.0, iso, options.virtual_sad_mm);
        let xs = offsets(scene.bev_half_width_mm(&geo, &scene.grown), spot_spacing_mm);
        let mut rays: Vec<SpotRay> = Vec::new();
        let mut at_edge = 0usize;
        for &y in &xs {
            for &x in &xs {
                let ray = geo.spot_ray(x, y, options.upstream_mm);
                trace_into(&scene.rsp, &ray, scene.t_max_mm, &mut profile);
                let Some(walk) = scene.walk(&ray, &profile, &scene.grown) else {
                    continue;
                };
                if walk.inside_t.is_empty() {
                    continue;
                }
                at_edge += usize::from(walk.enters_at_edge);
                let p = profile.view();
                let w = walk
                    .inside_t
                    .iter()
                    .map(|&(a, b)| (p.wepl_at_depth(a), p.wepl_at_depth(b)))
                    .collect();
                rays.push(SpotRay {
                    x_mm: x,
                    y_mm: y,
                    wepl_mm: w,
                });
            }
        }
        let all = || rays.iter().flat_map(|r| r.wepl_mm.iter());
        let Some(d_min) = all().map(|w| w.0).reduce(f64::min) else {
            return Err(PlannerError::EmptyBeam {
                beam: bi,
                gantry_deg: gantry,
            });
        };
        let d_max = all().map(|w| w.1).fold(f64::NEG_INFINITY, f64::max);
        let energy = |depth: f64| -> Result<f64, PlannerError> {
            let e = table
                .energy_mev_u(MmWe(depth))
                .map_err(|source| PlannerError::Range { beam: bi, source })?;
            if !(limits[0]..=limits[1]).contains(&e) {
                return Err(PlannerError::EnergyOutOfRange {
                    beam: bi,
                    gantry_deg: gantry,
                    depth_mm_we: depth,
                    energy_mev_u: e,
                    limits_mev_u: limits,
                });
            }
            Ok(e)
        };
        // the deepest and shallowest layers first: a plan the machine cannot deliver is
        // refused before any work is spent on it
        energy(d_max)?;
        energy(d_min)?;
        let n_layers = ((d_max - d_min) / layer_spacing_mm).floor() as usize + 1;
        let mut layers = Vec::with_capacity(n_layers);
        for l in (0..n_layers).rev() {
            let depth = d_min + l as f64 * layer_spacing_mm;
            let spots: Vec<Spot> = rays
                .iter()
                .filter(|r| r.wepl_mm.iter().any(|w| w.0 <= depth && depth <= w.1))
                .map(|r| Spot {
                    x_mm: r.x_mm,
                    y_mm: r.y_mm,
                    weight: 1.0,
                })
                .collect();
            if spots.is_empty() {
                continue;
            }
            layers.push(EnergyLayer {
                energy_mev_u: energy(depth)?,
                spots,
            });
        }
        let spots = layers.iter().map(|l| l.spots.len()).sum();
        let energies = layers.iter().map(|l| l.energy_mev_u);
        summaries.push(BeamSummary {
            gantry_deg: gantry,
            spots,
            layers: layers.len(),
            energy_mev_u: [
                energies.clone().fold(f64::INFINITY, f64::min),
                energies.fold(f64::NEG_INFINITY, f64::max),
            ],
            depth_mm_we: [d_min, d_min + (n_layers - 1) as f64 * layer_spacing_mm],
            entering_at_ct_edge: at_edge as f64 / rays.len() as f64,
        });
        beams.push(IonBeam {
            number: bi as i32 + 1,
            name: format!("G{gantry:.0}"),
            radiation_type: "ION".into(),
            ion: options.ion,
            gantry_angle_deg: gantry,
            couch_angle_deg: 0.0,
            isocenter_mm: iso,
            patient_position: Some(position_code.clone()),
            virtual_sad_mm: Some(options.virtual_sad_mm),
            range_shifters: Vec::new(),
            primary_dosimeter_unit: None,
            layers,
        });
    }
    let plan = IonPlan {
        sop_instance_uid: uid_from_seed(options.seed, "rtplan-ct", 0),
        frame_of_reference_uid: series.meta.frame_of_reference_uid.clone(),
        patient_id: series.meta.patient_id.clone().unwrap_or_default(),
        label: options.label.clone(),
        beams,
    };
    Ok(CtPlan {
        plan,
        summary: CtPlanSummary {
            target_roi: target_roi.to_string(),
            target_volume_cc: raster.volume_cc,
            body: body.source,
            target_inside_body: inside_body,
            isocenter_mm: iso,
            patient_position: position_code,
            spot_spacing_mm,
            layer_spacing_mm,
            beams: summaries,
        },
    })
}

fn validate(o: &CtPlannerOptions) -> Result<(), PlannerError> {
    let bad = |name, reason: String| Err(PlannerError::BadOption { name, reason });
    for (name, v) in [
        ("spot_spacing_mm", o.spot_spacing_mm),
        ("layer_spacing_mm", o.layer_spacing_mm),
        ("upstream_mm", Some(o.upstream_mm)),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0) {
                return bad(name, format!("must be finite and > 0, got {v}"));
            }
        }
    }
    if !(o.margin_mm.is_finite() && o.margin_mm >= 0.0) {
        return bad("margin_mm", format!("must be ≥ 0, got {}", o.margin_mm));
    }
    if !o.ion.is_supported() {
        return bad(
            "ion",
            format!("{} has no range data: one of 1H, 4He, 12C, 16O, 20Ne", o.ion),
        );
    }
    match &o.gantry_angles_deg {
        Some(a) if a.is_empty() || !a.iter().all(|g| g.is_finite()) => {
            return bad("gantry_angles_deg", format!("need finite angles, got {a:?}"));
        }
        None if o.beams == 0 => return bad("beams", "need at least one beam".into()),
        _ => {}
    }
    if o.max_spots == 0 {
        return bad("max_spots", "must be > 0".into());
    }
    if let Some([a, b]) = o.energy_limits_mev_u {
        if !(a.is_finite() && b.is_finite() && 0.0 < a && a < b) {
            return bad(
                "energy_limits_mev_u",
                format!("need 0 < lowest < highest, got [{a}, {b}]"),
            );
        }
    }
    if !o.virtual_sad_mm.iter().all(|s| *s > 0.0 && s.is_finite()) {
        return bad(
            "virtual_sad_mm",
            format!("must be finite and > 0, got {:?}", o.virtual_sad_mm),
        );
    }
    Ok(())
}

/// Spot and layer spacings: the given ones, else 1.5 mm and 2 mm scaled by one factor so
/// that `beams` beams over `volume_mm3` need at most `max_spots` spots (a beam puts about
/// `volume / (spot spacing² · layer spacing)` spots in a target), rounded up to 0.1 mm.
fn spacings(o: &CtPlannerOptions, beams: usize, volume_mm3: f64) -> (f64, f64) {
    let (s0, l0) = (1.5, 2.0);
    let scale = (beams as f64 * volume_mm3 / (s0 * s0 * l0 * o.max_spots as f64))
        .cbrt()
        .max(1.0);
    let round = |v: f64| (v * 10.0).ceil() / 10.0;
    (
        o.spot_spacing_mm.unwrap_or_else(|| round(s0 * scale)),
        o.layer_spacing_mm.unwrap_or_else(|| round(l0 * scale)),
    )
}

/// The automatic beam angles (module documentation).
fn choose_angles(
    scene: &Scene<'_>,
    position: PatientPosition,
    iso: PointMm,
    options: &CtPlannerOptions,
    roi: &str,
    profile: &mut RayProfile,
) -> Result<Vec<f64>, PlannerError> {
    // (angle in −90…90, edge-entry bucket, median WEPL to the target)
    let mut kept: Vec<(f64, i64, f64)> = Vec::new();
    for a in (-9..=9).map(|i| f64::from(i) * 10.0) {
        let gantry = (a + 360.0) % 360.0;
        let geo = BeamGeometry::new(position, gantry, 0.0, iso, options.virtual_sad_mm);
        let xs = offsets(scene.bev_half_width_mm(&geo, &scene.target), 5.0);
        let (mut n, mut edge, mut blocked) = (0usize, 0usize, 0usize);
        let mut wepl = Vec::new();
        for &y in &xs {
            for &x in &xs {
                let ray = geo.spot_ray(x, y, options.upstream_mm);
                trace_into(&scene.rsp, &ray, scene.t_max_mm, profile);
                let Some(walk) = scene.walk(&ray, profile, &scene.target) else {
                    continue;
                };
                let Some(&(t_in, _)) = walk.inside_t.first() else {
                    continue;
                };
                n += 1;
                edge += usize::from(walk.enters_at_edge);
                blocked += usize::from(walk.obstructed);
                wepl.push(profile.view().wepl_at_depth(t_in));
            }
        }
        if n == 0 || blocked as f64 > 0.02 * n as f64 {
            continue;
        }
        let bucket = (10.0 * edge as f64 / n as f64).round() as i64;
        kept.push((a, bucket, median(&mut wepl)));
    }
    kept.sort_by(|p, q| p.1.cmp(&q.1).then(p.2.total_cmp(&q.2)));
    let mut chosen: Vec<f64> = Vec::new();
    while chosen.len() < options.beams {
        let fits = |lo: f64, hi: f64| {
            kept.iter()
                .find(|c| chosen.iter().all(|&g| (lo..=hi).contains(&(c.0 - g).abs())))
                .map(|c| c.0)
        };
        let Some(next) = fits(60.0, 120.0).or_else(|| fits(30.0, 180.0)) else {
            return Err(PlannerError::NoPathFromSkin {
                roi: roi.to_string(),
                reason: format!(
                    "{} beam(s) wanted, but only {} gantry angle(s) between −90° and 90°, 30° apart, reach the target clear of dense material outside the body (the couch)",
                    options.beams,
                    chosen.len()
                ),
            });
        };
        chosen.push(next);
    }
    Ok(chosen.into_iter().map(|a| (a + 360.0) % 360.0).collect())
}
