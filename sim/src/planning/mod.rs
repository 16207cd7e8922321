//! A geometric spot-scanning planner on the phantom (and, in [`ct`], on any CT with a target
//! ROI): uniform spot grids over the PTV in the
//! beam's-eye view, energy layers evenly spaced in water-equivalent depth across it.
//!
//! For each beam every spot ray (diverging from the virtual sources, exactly as
//! [`ionguide::range::SpotTracer`] traces them) is intersected analytically with the target
//! sphere — the PTV grown by the lateral margin — and traced through the planning CT's
//! stopping power to get the WEPL of its proximal and distal crossing. Layer depths are
//! `d_min + n·layer_spacing` over all rays; a spot of layer `n` is placed on every ray whose
//! `[proximal, distal]` WEPL contains that depth, so its Bragg peak lands inside the target.
//! Energies come from the CSDA range–energy table of the ion; weights are uniform (dose
//! optimization is out of scope: the simulator scores geometry and range, not dose).
//!
//! Default beams for the right-lung tumor (patient HFS): gantry 270° (source on the
//! patient's right: the shortest path, through the right chest wall and lung, away from
//! heart and spine) and gantry 0° (anterior: through the anterior chest wall and lung,
//! also avoiding the spine; the two are 90° apart for a robust cross-fire).

use ionguide::dicom::rtplan::write_plan_bytes;
use ionguide::plan::{EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::raytrace::{trace_into, RayProfile};
use ionguide::range::{BeamGeometry, Hlut, PatientPosition, RangeEnergyTable, RangeError};
use ionguide::units::{Ion, MmWe, PointMm};

use crate::anatomy::phantom::Phantom;
use crate::imaging::frames::SeriesIds;
use crate::uid::uid_from_seed;

pub mod body;
pub mod ct;
pub mod optimize;

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlannerError {
    /// A planner option is out of range.
    #[error("invalid planner option {name}: {reason}")]
    BadOption {
        /// Option name.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The range engine refused something (ion, energy out of table).
    #[error("beam {beam}: {source}")]
    Range {
        /// Beam index.
        beam: usize,
        /// The range engine's error.
        #[source]
        source: RangeError,
    },
    /// A beam got no spot (its rays miss the target or the CT).
    #[error("beam {beam} (gantry {gantry_deg}°): no spot reaches the target")]
    EmptyBeam {
        /// Beam index.
        beam: usize,
        /// Its gantry angle.
        gantry_deg: f64,
    },
    /// The plan cannot be encoded.
    #[error("cannot write the plan")]
    Write(#[source] ionguide::dicom::rtplan::PlanError),
    /// The structure set has no ROI of the target's name.
    #[error("target ROI {name:?} not found; the structure set has {available:?}")]
    TargetNotFound {
        /// The name asked for.
        name: String,
        /// The ROIs present.
        available: Vec<String>,
    },
    /// The target is not (wholly) inside the CT.
    #[error("target ROI {roi:?} is outside the CT: {reason}")]
    TargetOutsideCt {
        /// The target ROI.
        roi: String,
        /// What lies outside.
        reason: String,
    },
    /// No beam can reach the target through the patient from the skin.
    #[error("no path from the skin to target ROI {roi:?}: {reason}")]
    NoPathFromSkin {
        /// The target ROI.
        roi: String,
        /// Why.
        reason: String,
    },
    /// A layer needs an energy the machine does not deliver.
    #[error(
        "beam {beam} (gantry {gantry_deg}°): a layer at {depth_mm_we:.1} mm w.e. needs {energy_mev_u:.1} MeV/u, outside the energies [{}, {}] MeV/u",
        limits_mev_u[0], limits_mev_u[1]
    )]
    EnergyOutOfRange {
        /// Beam index.
        beam: usize,
        /// Its gantry angle.
        gantry_deg: f64,
        /// The layer's water-equivalent depth, mm.
        depth_mm_we: f64,
        /// The energy it needs, MeV/u.
        energy_mev_u: f64,
        /// The energies allowed, MeV/u.
        limits_mev_u: [f64; 2],
    },
}

/// Planner knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannerOptions {
    /// Ion species.
    pub ion: Ion,
    /// Gantry angles, IEC 61217 degrees (couch 0, patient HFS).
    pub gantry_angles_deg: Vec<f64>,
    /// Spot grid spacing in the isocenter plane, mm.
    pub spot_spacing_mm: f64,
    /// Energy layer spacing, mm of water.
    pub layer_spacing_mm: f64,
    /// Lateral (and depth) margin around the PTV the spots cover, mm.
    pub lateral_margin_mm: f64,
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

impl Default for PlannerOptions {
    /// Carbon, gantry 270° and 0°, 1.5 mm spots, 2 mm WEPL layers, 3 mm margin, virtual
    /// SADs of several metres as on a synchrotron gantry, matRad's generic HLUT. On the
    /// default phantom (30 mm GTV, 40 mm PTV: an 80 mm registration ROI with its 20 mm
    /// margin) this is the reference workload of about 10,000 spots over two beams.
    fn default() -> Self {
        PlannerOptions {
            ion: Ion::CARBON12,
            gantry_angles_deg: vec![270.0, 0.0],
            spot_spacing_mm: 1.5,
            layer_spacing_mm: 2.0,
            lateral_margin_mm: 3.0,
            virtual_sad_mm: [6500.0, 7000.0],
            upstream_mm: 1000.0,
            hlut: Hlut::matrad_generic(),
            label: "PHANTOM-C12".into(),
            seed: 7,
        }
    }
}

impl PlannerOptions {
    fn validate(&self) -> Result<(), PlannerError> {
        let bad = |name, reason: String| Err(PlannerError::BadOption { name, reason });
        for (name, v) in [
            ("spot_spacing_mm", self.spot_spacing_mm),
            ("layer_spacing_mm", self.layer_spacing_mm),
            ("upstream_mm", self.upstream_mm),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(name, format!("must be finite and > 0, got {v}"));
            }
        }
        if !(self.lateral_margin_mm.is_finite() && self.lateral_margin_mm >= 0.0) {
            return bad(
                "lateral_margin_mm",
                format!("must be ≥ 0, got {}", self.lateral_margin_mm),
            );
        }
        if self.gantry_angles_deg.is_empty() || !self.gantry_angles_deg.iter().all(|a| a.is_finite()) {
            return bad(
                "gantry_angles_deg",
                format!("need finite angles, got {:?}", self.gantry_angles_deg),
            );
        }
        if !self.virtual_sad_mm.iter().all(|s| *s > 0.0 && s.is_finite()) {
            return bad(
                "virtual_sad_mm",
                format!("must be finite and > 0, got {:?}", self.virtual_sad_mm),
            );
        }
        Ok(())
    }
}

/// Plans `phantom` for the patient and Frame of Reference of `ct_ids`.
pub fn plan(
    phantom: &Phantom,
    ct_ids: &SeriesIds,
    options: &PlannerOptions,
) -> Result<IonPlan, PlannerError> {
    options.validate()?;
    let rsp = options.hlut.convert(&phantom.ct);
    let iso = PointMm::from(phantom.tumor_center_mm);
    let target_r = phantom.ptv_radius_mm + options.lateral_margin_mm;
    let mut profile = RayProfile::with_capacity(2048);
    let mut beams = Vec::with_capacity(options.gantry_angles_deg.len());
    for (bi, &gantry) in options.gantry_angles_deg.iter().enumerate() {
        let table =
            RangeEnergyTable::new(options.ion).map_err(|source| PlannerError::Range { beam: bi, source })?;
        let geo = BeamGeometry::new(PatientPosition::Hfs, gantry, 0.0, iso, options.virtual_sad_mm);
        // Divergence makes the target's shadow in the isocenter plane slightly wider than
        // the sphere; 10% covers SADs down to ~1 m, and rays that miss are skipped anyway.
        let half = 1.1 * target_r;
        let n = (half / options.spot_spacing_mm).ceil() as i64;
        // (x, y, proximal WEPL, distal WEPL) of every ray crossing the target.
        let mut rays: Vec<(f64, f64, f64, f64)> = Vec::new();
        for iy in -n..=n {
            for ix in -n..=n {
                let (x, y) = (
                    ix as f64 * options.spot_spacing_mm,
                    iy as f64 * options.spot_spacing_mm,
                );
                let ray = geo.spot_ray(x, y, options.upstream_mm);
                // |o + t·u − c|² = R²  with unit u.
                let oc = ray.origin - iso;
                let b = oc.dot(&ray.direction);
                let disc = b * b - (oc.norm_squared() - target_r * target_r);
                if disc <= 0.0 {
                    continue;
                }
                let (t1, t2) = (-b - disc.sqrt(), -b + disc.sqrt());
                trace_into(&rsp, &ray, t2 + 1.0, &mut profile);
                if profile.view().is_empty() {
                    continue;
                }
                let p = profile.view();
                rays.push((x, y, p.wepl_at_depth(t1), p.wepl_at_depth(t2)));
            }
        }
        let Some(d_min) = rays.iter().map(|r| r.2).reduce(f64::min) else {
            return Err(PlannerError::EmptyBeam {
                beam: bi,
                gantry_deg: gantry,
            });
        };
        let d_max = rays.iter().map(|r| r.3).fold(f64::NEG_INFINITY, f64::max);
        let n_layers = ((d_max - d_min) / options.layer_spacing_mm).floor() as usize + 1;
        let mut layers = Vec::with_capacity(n_layers);
        // Distal layer first, as scanned beams are delivered.
        for l in (0..n_layers).rev() {
            let depth = d_min + l as f64 * options.layer_spacing_mm;
            let spots: Vec<Spot> = rays
                .iter()
                .filter(|r| r.2 <= depth && depth <= r.3)
                .map(|r| Spot {
                    x_mm: r.0,
                    y_mm: r.1,
                    weight: 1.0,
                })
                .collect();
            if spots.is_empty() {
                continue;
            }
            let energy = table
                .energy_mev_u(MmWe(depth))
                .map_err(|source| PlannerError::Range { beam: bi, source })?;
            layers.push(EnergyLayer {
                energy_mev_u: energy,
                spots,
            });
        }
        beams.push(IonBeam {
            number: bi as i32 + 1,
            name: format!("G{gantry:.0}"),
            radiation_type: "ION".into(),
            ion: options.ion,
            gantry_angle_deg: gantry,
            couch_angle_deg: 0.0,
            isocenter_mm: iso,
            patient_position: Some("HFS".into()),
            virtual_sad_mm: Some(options.virtual_sad_mm),
            range_shifters: Vec::new(),
            primary_dosimeter_unit: None,
            layers,
        });
    }
    Ok(IonPlan {
        sop_instance_uid: uid_from_seed(options.seed, "rtplan", 0),
        frame_of_reference_uid: ct_ids.frame_of_reference_uid.clone(),
        patient_id: ct_ids.patient_id.clone(),
        label: options.label.clone(),
        beams,
    })
}

/// [`plan`], written as an RT Ion Plan (Part 10, Explicit VR Little Endian).
pub fn plan_bytes(plan: &IonPlan) -> Result<Vec<u8>, PlannerError> {
    write_plan_bytes(plan).map_err(PlannerError::Write)
}
