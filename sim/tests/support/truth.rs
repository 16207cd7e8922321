//! The truth a whole-patient shift implies for every spot, computed from the shift and the
//! beam geometry alone — independently of `src/adapt`.

use ionguide::correction::CorrectionSet;
use ionguide::range::{BeamGeometry, RangeEnergyTable};
use ionguide::units::{PointMm, VectorMm};

use super::rig::Rig;

/// Lateral truth tolerance at the isocenter plane, mm.
pub const LATERAL_TOL_MM: f64 = 0.5;
/// Range truth tolerance, mm of water.
pub const RANGE_TOL_MM: f64 = 1.0;

/// Where a patient point projects on the isocenter plane through each scanning magnet's
/// virtual source (beam's-eye view x, y), mm.
fn project(g: &BeamGeometry, point: &PointMm) -> [f64; 2] {
    let r: VectorMm = point - g.isocenter_mm;
    let z = r.dot(&g.to_source);
    let axis = |bev: &VectorMm, sad: f64| {
        let l = r.dot(bev);
        if sad.is_finite() {
            l * sad / (sad - z)
        } else {
            l
        }
    };
    [axis(&g.bev_x, g.sad_mm[0]), axis(&g.bev_y, g.sad_mm[1])]
}

/// Checks every spot of `set` against the truth for a whole-patient shift `shift_mm`.
pub fn check_against_truth(rig: &Rig, set: &CorrectionSet, shift_mm: [f64; 3], frame: usize) {
    let session = &rig.session;
    let plan = &session.plan;
    let shift = VectorMm::new(shift_mm[0], shift_mm[1], shift_mm[2]);
    let spots = session.planned.spots();
    assert_eq!(
        set.spots.len(),
        spots.len(),
        "frame {frame}: one correction per planned spot"
    );
    let mut worst_lateral = 0.0f64;
    let mut worst_range = 0.0f64;
    for (s, spot_ref) in spots.iter().enumerate() {
        let got = set.spots[s];
        assert_eq!(got.spot_index as usize, s, "frame {frame}: spots in plan order");
        let beam = &plan.beams[spot_ref.beam];
        let layer = &beam.layers[spot_ref.layer];
        let planned = &layer.spots[spot_ref.spot];
        let g = BeamGeometry::from_beam(beam, session.options.default_sad_mm).unwrap();
        let p = session
            .planned
            .target_point_mm(s)
            .unwrap_or_else(|| panic!("spot {s} has a planned target point"));
        let q = p + shift;
        let (xp, xq) = (project(&g, &p), project(&g, &q));
        let expect = [xq[0] - xp[0], xq[1] - xp[1]];
        let moved = [
            f64::from(got.x_mm) - planned.x_mm,
            f64::from(got.y_mm) - planned.y_mm,
        ];
        for a in 0..2 {
            let err = (moved[a] - expect[a]).abs();
            worst_lateral = worst_lateral.max(err);
            assert!(
                err <= LATERAL_TOL_MM,
                "frame {frame} spot {s} axis {a}: moved {:.3} mm, truth {:.3} mm",
                moved[a],
                expect[a]
            );
        }
        // A rigid shift of the whole patient changes no water-equivalent depth to the moved
        // target: the range must stay the planned one.
        let table = RangeEnergyTable::new(beam.ion).unwrap();
        let r_plan = table.range_mm(layer.energy_mev_u).unwrap();
        let r_got = table.range_mm(f64::from(got.energy_mev_u)).unwrap();
        let err = (r_got - r_plan).abs().get();
        worst_range = worst_range.max(err);
        assert!(
            err <= RANGE_TOL_MM,
            "frame {frame} spot {s}: range {r_got:.3} mm, planned {r_plan:.3} mm"
        );
    }
    eprintln!(
        "frame {frame}: shift {shift_mm:?} mm, {} spots, worst lateral error {worst_lateral:.3} mm, worst range error {worst_range:.3} mm",
        spots.len()
    );
}
