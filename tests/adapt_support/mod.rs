//! A water phantom, a one-beam carbon plan and a registration with a known rigid shift, for
//! the adapt tests. Gantry 0, HFS: the source is anterior (−y), rays travel +y, BEV x = +x
//! (patient left), BEV y = +z (superior); the water box spans ±100 mm on every axis.

#![allow(dead_code)]

use std::sync::Arc;

use ionguide::adapt::{AdaptOptions, AdaptPlan, SafetyLimits};
use ionguide::geometry::{Grid, RigidTransform};
use ionguide::plan::{EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::spots::{SpotTracer, SpotTracerOptions};
use ionguide::range::Hlut;
use ionguide::register::{Registration, Verdict};
use ionguide::units::{Ion, Mm, MmWe, PointMm, VectorMm};
use ionguide::volume::CtVolume;

/// Virtual SADs `[x, y]`, mm: unequal, so a mix-up of the axes shows.
pub const SAD_MM: [f64; 2] = [6500.0, 7000.0];
/// Planned layer energies, MeV/u: targets upstream (≈ 87 mm deep) and downstream (≈ 125 mm)
/// of the isocenter.
pub const ENERGIES_MEV_U: [f64; 2] = [200.0, 250.0];

/// 100³ voxels of 2 mm, HU `hu`, box edges at ±100 mm.
pub fn water_ct(hu: i16) -> CtVolume {
    let grid = Grid::axis_aligned([100, 100, 100], PointMm::new(-99.0, -99.0, -99.0), [2.0; 3]).unwrap();
    CtVolume::filled(grid, hu)
}

/// Sets HU `hu` in every voxel whose centre y lies in `[y0, y1)` (voxel edges at even mm).
pub fn slab(ct: &mut CtVolume, y0_mm: f64, y1_mm: f64, hu: i16) {
    for k in 0..100 {
        for j in 0..100 {
            let y = -99.0 + 2.0 * j as f64;
            if y >= y0_mm && y < y1_mm {
                for i in 0..100 {
                    *ct.get_mut(i, j, k).unwrap() = hu;
                }
            }
        }
    }
}

pub fn plan() -> IonPlan {
    let spots: Vec<Spot> = [(-20.0, -10.0), (0.0, 0.0), (30.0, 15.0), (45.0, -25.0)]
        .iter()
        .map(|&(x_mm, y_mm)| Spot {
            x_mm,
            y_mm,
            weight: 1.0,
        })
        .collect();
    IonPlan {
        sop_instance_uid: "1.2.3".into(),
        frame_of_reference_uid: "1.2.3.4".into(),
        patient_id: "phantom".into(),
        label: "water".into(),
        beams: vec![IonBeam {
            number: 1,
            name: "B1".into(),
            radiation_type: "ION".into(),
            ion: Ion::CARBON12,
            gantry_angle_deg: 0.0,
            couch_angle_deg: 0.0,
            isocenter_mm: PointMm::origin(),
            patient_position: Some("HFS".into()),
            virtual_sad_mm: Some(SAD_MM),
            range_shifters: vec![],
            primary_dosimeter_unit: None,
            layers: ENERGIES_MEV_U
                .iter()
                .map(|&energy_mev_u| EnergyLayer {
                    energy_mev_u,
                    spots: spots.clone(),
                })
                .collect(),
        }],
    }
}

pub fn tracer_options() -> SpotTracerOptions {
    // A margin wider than any range limit used, so a deeper target is still traced.
    SpotTracerOptions::new(SAD_MM).with_wepl_margin(MmWe(40.0))
}

/// The plan, its planned tracer (traced through the water phantom), and a frame tracer.
pub struct Setup {
    pub plan: IonPlan,
    pub planned: SpotTracer,
    pub frame: SpotTracer,
    pub hlut: Hlut,
}

pub fn setup() -> Setup {
    let plan = plan();
    let hlut = Hlut::default();
    let mut planned = SpotTracer::new(&plan, &tracer_options()).unwrap();
    planned.trace_frame_ct(&water_ct(0), &hlut);
    let frame = planned.clone();
    Setup {
        plan,
        planned,
        frame,
        hlut,
    }
}

pub fn adapt_plan(s: &Setup, options: AdaptOptions) -> Arc<AdaptPlan> {
    Arc::new(AdaptPlan::new(&s.plan, &s.planned, options).unwrap())
}

pub fn wide_limits() -> SafetyLimits {
    SafetyLimits {
        max_lateral: Mm(50.0),
        max_range: MmWe(50.0),
        max_jump: Mm(100.0),
        min_ncc: 0.5,
        max_rotation_deg: 90.0,
    }
}

/// A usable registration whose tumor (planned at the isocenter) moved by `shift`.
pub fn registration(shift: VectorMm) -> Registration {
    let planned = PointMm::origin();
    Registration {
        transform: RigidTransform::from_rotation_vector(VectorMm::zeros(), shift),
        converged: true,
        iterations: 6,
        similarity_ncc: 0.98,
        rms_hu: 12.0,
        overlap_fraction: 1.0,
        verdict: Verdict::Accept,
        residual_mm: 0.1,
        target_planned_mm: planned,
        target_mm: planned + shift,
        tumor_shift_mm: shift,
    }
}
