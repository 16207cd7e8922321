//! Per-spot and per-frame errors: where each delivered spot lands against where the moved
//! target needs it, and each spot's range change against the true water depth.

use ionguide::correction::{CorrectionSet, RangeMode};
use ionguide::geometry::PointMap;
use ionguide::pipeline::Session;
use ionguide::range::{BeamGeometry, RangeEnergyTable, RangeError};
use ionguide::units::{MmWe, PointMm};

use super::histogram::ErrorHistogram;

/// Per-spot geometry the scorer needs (independent of the adapt stage's own arithmetic).
#[derive(Debug, Clone)]
struct SpotTruth {
    beam: usize,
    target_mm: Option<PointMm>,
    x_plan_mm: f64,
    y_plan_mm: f64,
    energy_mev_u: f64,
    planned_depth_mm: f64,
}

/// Where the ray from each scanning magnet's virtual source through `q` crosses the
/// isocenter plane (beam's-eye view x, y), mm.
pub fn iso_plane_xy(g: &BeamGeometry, q: &PointMm) -> (f64, f64) {
    let r = q - g.isocenter_mm;
    let d = r.dot(&g.to_source);
    let (a, b) = (r.dot(&g.bev_x), r.dot(&g.bev_y));
    let mag = |sad: f64| if sad.is_finite() { sad / (sad - d) } else { 1.0 };
    (a * mag(g.sad_mm[0]), b * mag(g.sad_mm[1]))
}

/// |estimated − true| tumor shift, mm.
pub fn tumor_error_mm(est_mm: [f64; 3], true_mm: [f64; 3]) -> f64 {
    ((est_mm[0] - true_mm[0]).powi(2) + (est_mm[1] - true_mm[1]).powi(2) + (est_mm[2] - true_mm[2]).powi(2))
        .sqrt()
}

/// The largest errors of one delivered frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameSpotErrors {
    /// Largest delivered-spot position error, mm (isocenter plane).
    pub spot_max_mm: f64,
    /// Largest |range error|, mm water-equivalent.
    pub range_max_mm: f64,
}

/// Scores delivered spots of a session's plan against the moved anatomy.
#[derive(Debug, Clone)]
pub struct SpotScorer {
    spots: Vec<SpotTruth>,
    geoms: Vec<BeamGeometry>,
    tables: Vec<RangeEnergyTable>,
}

impl SpotScorer {
    /// The scorer for every planned spot of `session` (`default_sad_mm` for beams that do
    /// not give their virtual source distances).
    pub fn new(session: &Session, default_sad_mm: [f64; 2]) -> Result<Self, RangeError> {
        let geoms = session
            .plan
            .beams
            .iter()
            .map(|b| BeamGeometry::from_beam(b, default_sad_mm))
            .collect::<Result<_, _>>()?;
        let tables = session
            .plan
            .beams
            .iter()
            .map(|b| RangeEnergyTable::new(b.ion))
            .collect::<Result<_, _>>()?;
        let spots = session
            .planned
            .spots()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let spot = &session.plan.beams[s.beam].layers[s.layer].spots[s.spot];
                SpotTruth {
                    beam: s.beam,
                    target_mm: session.planned.target_point_mm(i),
                    x_plan_mm: spot.x_mm,
                    y_plan_mm: spot.y_mm,
                    energy_mev_u: s.energy_mev_u,
                    planned_depth_mm: s.planned_depth.get(),
                }
            })
            .collect();
        Ok(SpotScorer { spots, geoms, tables })
    }

    /// Scores spot `i` (plan order) delivered with `delivered` (`None`: as planned) on the
    /// anatomy moved by `moved` (the true motion of its target point: a shift `VectorMm`, or
    /// a rotating frame's `RigidTransform`), `true_wepl_mm` its true water depth to its moved
    /// target:
    /// (lateral error in the isocenter plane, mm; range error, mm w.e. — NaN when the spot
    /// has no target point or no depth).
    pub fn score_spot<M: PointMap + ?Sized>(
        &self,
        i: usize,
        delivered: Option<&CorrectionSet>,
        moved: &M,
        true_wepl_mm: f32,
    ) -> (f64, f64) {
        let Some(s) = self.spots.get(i) else {
            return (f64::NAN, f64::NAN);
        };
        let Some(p) = s.target_mm else {
            return (f64::NAN, f64::NAN);
        };
        let g = &self.geoms[s.beam];
        let (xp, yp) = iso_plane_xy(g, &p);
        let (xq, yq) = iso_plane_xy(g, &moved.map_mm(p));
        let (x_need, y_need) = (s.x_plan_mm + xq - xp, s.y_plan_mm + yq - yp);
        let table = &self.tables[s.beam];
        let (x_got, y_got, range_shift_got) = match delivered {
            Some(set) => {
                let c = set.spots.get(i).copied().unwrap_or_default();
                let shift = match set.mode {
                    Some(RangeMode::RangeShifter) => -(c.range_shifter_mm_we as f64),
                    _ => {
                        let range = |e: f64| table.range_mm(e).map_or(f64::NAN, MmWe::get);
                        range(c.energy_mev_u as f64) - range(s.energy_mev_u)
                    }
                };
                (c.x_mm as f64, c.y_mm as f64, shift)
            }
            None => (s.x_plan_mm, s.y_plan_mm, 0.0),
        };
        let spot_err = ((x_got - x_need).powi(2) + (y_got - y_need).powi(2)).sqrt();
        let need = true_wepl_mm as f64 - s.planned_depth_mm;
        (spot_err, range_shift_got - need)
    }

    /// Scores one frame delivered with the anatomy moved by `moved`: `delivered` is the
    /// applied correction set (`None`: the planned spots unchanged), `true_wepl_mm` every
    /// spot's true water depth to its moved target in the noise-free frame. Each spot's
    /// errors go into `spot_h` and `range_h`; the frame's largest are returned.
    pub fn score_frame<M: PointMap + ?Sized>(
        &self,
        delivered: Option<&CorrectionSet>,
        moved: &M,
        true_wepl_mm: &[f32],
        spot_h: &mut ErrorHistogram,
        range_h: &mut ErrorHistogram,
    ) -> FrameSpotErrors {
        let (mut spot_max, mut range_max) = (0.0f64, 0.0f64);
        for i in 0..self.spots.len() {
            if self.spots[i].target_mm.is_none() {
                continue;
            }
            let wepl = true_wepl_mm.get(i).copied().unwrap_or(f32::NAN);
            let (spot_err, range_err) = self.score_spot(i, delivered, moved, wepl);
            spot_h.record_mm(spot_err);
            spot_max = spot_max.max(spot_err);
            if range_err.is_finite() {
                range_h.record_mm(range_err);
                range_max = range_max.max(range_err.abs());
            }
        }
        FrameSpotErrors {
            spot_max_mm: spot_max,
            range_max_mm: range_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ionguide::units::VectorMm;

    /// A beam with its sources on the +z axis and the beam's-eye view along x and y, so the
    /// divergent projection is plain similar triangles.
    fn beam(sad_mm: [f64; 2]) -> BeamGeometry {
        BeamGeometry {
            isocenter_mm: PointMm::new(10.0, 20.0, 30.0),
            to_source: VectorMm::new(0.0, 0.0, 1.0),
            bev_x: VectorMm::new(1.0, 0.0, 0.0),
            bev_y: VectorMm::new(0.0, 1.0, 0.0),
            sad_mm,
        }
    }

    #[test]
    fn iso_plane_projection_follows_the_rays_from_each_virtual_source() {
        // on the isocenter plane a point is its own projection
        let g = beam([2000.0, 1000.0]);
        let (x, y) = iso_plane_xy(&g, &PointMm::new(14.0, 17.0, 30.0));
        assert!((x - 4.0).abs() < 1e-12 && (y + 3.0).abs() < 1e-12);
        // 500 mm toward the sources: x is magnified by 2000/1500, y by 1000/500
        let (x, y) = iso_plane_xy(&g, &PointMm::new(13.0, 23.0, 530.0));
        assert!((x - 3.0 * 2000.0 / 1500.0).abs() < 1e-9, "{x}");
        assert!((y - 3.0 * 2.0).abs() < 1e-9, "{y}");
        // parallel beams do not magnify
        let (x, y) = iso_plane_xy(&beam([f64::INFINITY; 2]), &PointMm::new(13.0, 23.0, 530.0));
        assert_eq!((x, y), (3.0, 3.0));
    }

    #[test]
    fn tumor_error_is_the_euclidean_distance() {
        assert_eq!(tumor_error_mm([3.0, 0.0, 4.0], [0.0; 3]), 5.0);
        assert_eq!(tumor_error_mm([1.0, 2.0, 2.0], [1.0, 0.0, 0.0]), 8f64.sqrt());
    }
}
