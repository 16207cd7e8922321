//! The dose engine's single-precision fast path against the exact reference formula,
//! [`PencilKernel::dose_gy_per_ion`] (f64, binary-searched table, the same cut-off), voxel by
//! voxel: a few spots of two energies per ion in a water phantom, beams normal to the grid's
//! planes (each plane within one table piece) and 30° off them (a plane spans many pieces).
//!
//! `cargo test --test dose_kernel -- --nocapture` prints the largest deviations.

use std::path::Path;

use ionguide::dose::{compute_dose, DoseOptions, IonMachine, PencilKernel};
use ionguide::geometry::Grid;
use ionguide::plan::{EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::{Hlut, SpotTracer, SpotTracerOptions};
use ionguide::units::{Ion, MmWe, PointMm};
use ionguide::volume::Volume;

const DATA: &str = "tests/data/matrad";
const PARTICLES: f64 = 1e7;
/// Spot positions in the beam's eye view, mm.
const SPOTS: [(f64, f64); 3] = [(0.0, 0.0), (4.0, -3.0), (-6.0, 5.0)];

/// Water RSP 1 at HU 0.
fn hlut() -> Hlut {
    Hlut::from_points(
        vec![(-1024.0, 0.0), (0.0, 1.0), (3000.0, 2.8)],
        Path::new("<test>"),
    )
    .unwrap()
}

fn plan(ion: Ion, gantry_deg: f64, energies: [f64; 2]) -> IonPlan {
    IonPlan {
        sop_instance_uid: "1".into(),
        frame_of_reference_uid: "1".into(),
        patient_id: "p".into(),
        label: "kernel".into(),
        beams: vec![IonBeam {
            number: 1,
            name: "b".into(),
            radiation_type: "ION".into(),
            ion,
            gantry_angle_deg: gantry_deg,
            couch_angle_deg: 0.0,
            isocenter_mm: PointMm::new(0.0, 30.0, 0.0),
            patient_position: Some("HFS".into()),
            virtual_sad_mm: None,
            range_shifters: vec![],
            primary_dosimeter_unit: None,
            layers: energies
                .iter()
                .map(|&energy_mev_u| EnergyLayer {
                    energy_mev_u,
                    spots: SPOTS
                        .iter()
                        .map(|&(x_mm, y_mm)| Spot {
                            x_mm,
                            y_mm,
                            weight: PARTICLES,
                        })
                        .collect(),
                })
                .collect(),
        }],
    }
}

/// Two energies per ion, Bragg peaks near 40 and 120 mm.
fn energies(folder: &str) -> [f64; 2] {
    match folder {
        "carbon_Generic" => [133.78, 245.79],
        "protons_Generic" => [72.3349, 129.7775],
        "helium_Generic" => [71.2001, 129.3279],
        "oxygen_Generic" => [152.0454, 287.5036],
        _ => unreachable!(),
    }
}

#[test]
fn the_fast_path_matches_the_reference_formula_at_every_voxel() {
    // Water box, 1 mm voxels across, 0.5 mm along y (the beam's axis at gantry 0).
    let grid = Grid::axis_aligned([61, 300, 41], PointMm::new(-30.0, 0.0, -20.0), [1.0, 0.5, 1.0]).unwrap();
    // The box's faces: a ray's water depth runs from where it enters, and it carries dose
    // only until it leaves (the model's central-axis depth).
    let (box_lo, box_hi) = ([-30.5, -0.25, -20.5], [30.5, 149.75, 20.5]);
    let through = |origin: PointMm, dir: [f64; 3]| -> (f64, f64) {
        let (mut t_in, mut t_out) = (f64::NEG_INFINITY, f64::INFINITY);
        for a in 0..3 {
            if dir[a] != 0.0 {
                let (t1, t2) = ((box_lo[a] - origin[a]) / dir[a], (box_hi[a] - origin[a]) / dir[a]);
                t_in = t_in.max(t1.min(t2));
                t_out = t_out.min(t1.max(t2));
            }
        }
        (t_in, t_out)
    };
    let ct = Volume::filled(grid.clone(), 0i16);
    let mut worst = 0.0f64;
    for folder in [
        "carbon_Generic",
        "protons_Generic",
        "helium_Generic",
        "oxygen_Generic",
    ] {
        let m = IonMachine::from_dir(&Path::new(DATA).join(folder)).unwrap();
        for gantry_deg in [0.0, 30.0] {
            let p = plan(m.ion, gantry_deg, energies(folder));
            let options = DoseOptions::new([f64::INFINITY; 2]);
            let d = compute_dose(&p, &ct, &hlut(), std::slice::from_ref(&m), &grid, &options).unwrap();

            // Each spot's ray, from the range engine's own geometry; its kernel.
            let tracer = SpotTracer::new(
                &p,
                &SpotTracerOptions::new([f64::INFINITY; 2]).with_wepl_margin(MmWe(0.0)),
            )
            .unwrap();
            let spots: Vec<_> = tracer
                .spots()
                .iter()
                .map(|s| {
                    let ray = tracer.rays()[s.ray];
                    let e = m.energy_index(s.energy_mev_u, 0.01).unwrap();
                    let d = ray.direction;
                    let (t_in, t_out) = through(ray.origin, [d.x, d.y, d.z]);
                    (
                        ray,
                        t_in,
                        t_out,
                        PencilKernel::new(&m.energies[e], m.lateral, options.lateral_cutoff),
                    )
                })
                .collect();
            assert_eq!(spots.len(), 6);

            let [ni, nj, nk] = grid.dims();
            let (mut max, mut max_diff, mut checked) = (0.0f64, 0.0f64, 0usize);
            let mut want = vec![0.0f64; grid.len()];
            for k in 0..nk {
                for j in 0..nj {
                    for i in 0..ni {
                        let x = grid.index_to_patient([i as f64, j as f64, k as f64]);
                        let w: f64 = spots
                            .iter()
                            .map(|(ray, t_in, t_out, kernel)| {
                                let v = x - ray.origin;
                                let t = v.dot(&ray.direction);
                                if t > *t_out {
                                    return 0.0;
                                }
                                let r_sq = (v.norm_squared() - t * t).max(0.0);
                                // Water: the depth is the path from where the ray enters.
                                PARTICLES * kernel.dose_gy_per_ion((t - t_in).max(0.0), r_sq)
                            })
                            .sum();
                        want[grid.offset(i, j, k)] = w;
                        max = max.max(w);
                    }
                }
            }
            assert!(max > 0.0);
            for k in 0..nk {
                for j in 0..nj {
                    for i in 0..ni {
                        let w = want[grid.offset(i, j, k)];
                        let got = f64::from(*d.get(i, j, k).unwrap());
                        let diff = (got - w).abs();
                        assert!(
                            diff <= 1e-4 * max,
                            "{folder}, gantry {gantry_deg}°, voxel ({i}, {j}, {k}): fast {got:e} Gy, reference {w:e} Gy (max {max:e})"
                        );
                        max_diff = max_diff.max(diff);
                        checked += (w > 0.01 * max) as usize;
                    }
                }
            }
            assert!(checked > 2000, "{checked} voxels in the beams");
            eprintln!(
                "{folder}, gantry {gantry_deg}°: max |fast − reference| {:.2e} of the max dose over {checked} voxels above 1 %",
                max_diff / max
            );
            worst = worst.max(max_diff / max);
        }
    }
    eprintln!("worst: {worst:.2e} of the max dose");
}
