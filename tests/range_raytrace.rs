//! Ray tracing against analytic WEPL on slab and box phantoms, axis-aligned and rotated
//! grids, plus proptest invariants (lengths, additivity).

use ionguide::geometry::Grid;
use ionguide::range::raytrace::{trace_into, voxel_segments, wepl_between, Ray, RayProfile};
use ionguide::units::{PointMm, VectorMm};
use ionguide::volume::Volume;
use nalgebra::{Matrix3, Rotation3};
use proptest::prelude::*;

fn rel_close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1e-12)
}

/// Slabs along the grid's i axis: RSP of column i is 0.5 + 0.1·i.
fn slab_volume(grid: Grid) -> Volume<f32> {
    let mut v = Volume::filled(grid.clone(), 0.0f32);
    let [nx, ny, nz] = grid.dims();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                *v.get_mut(i, j, k).unwrap() = slab_rsp(i);
            }
        }
    }
    v
}
fn slab_rsp(i: usize) -> f32 {
    0.5 + 0.1 * i as f32
}

/// A ray crossing every slab (entering and leaving through the i faces) defined in index
/// space: per unit of index-x it moves `du` in index space, so each slab contributes
/// `rsp_i · |P·du|` mm.
fn slab_truth(grid: &Grid, du: [f64; 3]) -> f64 {
    let step_mm = (grid.index_to_patient_matrix() * nalgebra::Vector3::from(du)).norm();
    (0..grid.dims()[0]).map(|i| slab_rsp(i) as f64 * step_mm).sum()
}

#[test]
fn oblique_ray_through_slabs_on_axis_aligned_and_rotated_grids() {
    let rotations = [
        Matrix3::identity(),
        *Rotation3::from_euler_angles(0.3, -0.5, 1.2).matrix(),
        *Rotation3::from_euler_angles(-2.0, 0.1, 0.7).matrix(),
    ];
    for rot in rotations {
        let grid = Grid::new([12, 9, 7], PointMm::new(-30.0, 12.0, 100.0), [1.3, 0.9, 2.1], rot).unwrap();
        let vol = slab_volume(grid.clone());
        // Index-space line: x from −40 to +50 (well outside), y, z drift but stay inside.
        let du = [1.0, 0.03, -0.02];
        let a_idx = [-40.0, 4.0 - 40.0 * 0.03, 3.0 + 40.0 * 0.02];
        let b_idx = [50.0, 4.0 + 50.0 * 0.03, 3.0 - 50.0 * 0.02];
        let a = grid.index_to_patient(a_idx);
        let b = grid.index_to_patient(b_idx);
        let want = slab_truth(&grid, du);
        let got = wepl_between(&vol, &a, &b);
        assert!(rel_close(got.wepl_mm, want, 1e-6), "{} vs {want}", got.wepl_mm);
        // The reverse direction gives the same WEPL.
        let back = wepl_between(&vol, &b, &a);
        assert!(rel_close(back.wepl_mm, want, 1e-6));
        // A far start (−2 m) does not change anything.
        let far = a + (a - b).normalize() * 2000.0;
        assert!(rel_close(wepl_between(&vol, &far, &b).wepl_mm, want, 1e-6));
    }
}

#[test]
fn axis_parallel_rays() {
    let grid = Grid::axis_aligned([10, 8, 6], PointMm::new(0.0, 0.0, 0.0), [2.0, 1.0, 3.0]).unwrap();
    let vol = slab_volume(grid.clone());
    // Along +x through voxel centres: each slab 2 mm.
    let want: f64 = (0..10).map(|i| slab_rsp(i) as f64 * 2.0).sum();
    let w = wepl_between(
        &vol,
        &PointMm::new(-100.0, 3.0, 6.0),
        &PointMm::new(100.0, 3.0, 6.0),
    );
    assert!(rel_close(w.wepl_mm, want, 1e-9));
    assert!(rel_close(w.geometric_mm, 20.0, 1e-12));
    // Along −z inside slab i=4: 6 slices × 3 mm.
    let w = wepl_between(
        &vol,
        &PointMm::new(8.3, 2.2, 500.0),
        &PointMm::new(8.3, 2.2, -500.0),
    );
    assert!(rel_close(w.wepl_mm, slab_rsp(4) as f64 * 18.0, 1e-9));
    // Along y, starting inside at y = 3.0 going down to y = −0.5: 3.5 mm.
    let w = wepl_between(&vol, &PointMm::new(2.0, 3.0, 3.0), &PointMm::new(2.0, -50.0, 3.0));
    assert!(rel_close(w.wepl_mm, slab_rsp(1) as f64 * 3.5, 1e-9));
}

/// Box [lo, hi] clipped length of segment a→b (independent Liang–Barsky in patient space).
fn clip_len(lo: [f64; 3], hi: [f64; 3], a: &PointMm, b: &PointMm) -> f64 {
    let d = b - a;
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for ax in 0..3 {
        if d[ax] == 0.0 {
            if a[ax] < lo[ax] || a[ax] > hi[ax] {
                return 0.0;
            }
        } else {
            let (ta, tb) = ((lo[ax] - a[ax]) / d[ax], (hi[ax] - a[ax]) / d[ax]);
            t0 = t0.max(ta.min(tb));
            t1 = t1.min(ta.max(tb));
        }
    }
    ((t1 - t0).max(0.0)) * d.norm()
}

#[test]
fn box_phantom_oblique_rays() {
    // 20³ voxels of 1.5 mm, RSP 0.25 outside an inner box of voxels 5..=14 with RSP 1.75.
    let s = 1.5;
    let grid = Grid::axis_aligned([20, 20, 20], PointMm::new(0.0, 0.0, 0.0), [s; 3]).unwrap();
    let mut vol = Volume::filled(grid.clone(), 0.25f32);
    for k in 5..15 {
        for j in 5..15 {
            for i in 5..15 {
                *vol.get_mut(i, j, k).unwrap() = 1.75;
            }
        }
    }
    let outer = ([-0.5 * s; 3], [19.5 * s; 3]);
    let inner = ([4.5 * s; 3], [14.5 * s; 3]);
    let rays = [
        (PointMm::new(-50.0, -40.0, -30.0), PointMm::new(60.0, 45.0, 40.0)),
        (PointMm::new(14.0, -100.0, 3.0), PointMm::new(15.0, 100.0, 25.0)),
        (PointMm::new(100.0, 14.2, 13.9), PointMm::new(-100.0, 15.3, 12.1)),
        (PointMm::new(10.0, 10.0, 10.0), PointMm::new(20.0, 12.0, 35.0)), // starts inside
    ];
    for (a, b) in rays {
        let l_out = clip_len(outer.0, outer.1, &a, &b);
        let l_in = clip_len(inner.0, inner.1, &a, &b);
        let want = 0.25 * l_out + 1.5 * l_in;
        let got = wepl_between(&vol, &a, &b);
        assert!(
            rel_close(got.wepl_mm, want, 1e-6),
            "{a} → {b}: {} vs {want}",
            got.wepl_mm
        );
        assert!(rel_close(got.geometric_mm, l_out, 1e-9));
    }
}

#[test]
fn corners_edges_boundary_planes_and_misses() {
    let grid = Grid::axis_aligned([6, 6, 6], PointMm::origin(), [1.0; 3]).unwrap();
    let water = Volume::filled(grid.clone(), 1.0f32);
    // Main diagonal, entering exactly at a corner: every crossing is a triple tie.
    let w = wepl_between(
        &water,
        &PointMm::new(-10.5, -10.5, -10.5),
        &PointMm::new(20.5, 20.5, 20.5),
    );
    assert!(rel_close(w.wepl_mm, 6.0 * 3f64.sqrt(), 1e-9), "{w:?}");
    // Touching only the corner point from outside: nothing inside.
    let w = wepl_between(
        &water,
        &PointMm::new(-1.5, 0.5, -1.5),
        &PointMm::new(0.5, -1.5, 0.5),
    );
    assert_eq!(w.wepl_mm, 0.0);
    // A clean miss, parallel and oblique.
    for (a, b) in [
        (PointMm::new(-5.0, 7.0, 2.0), PointMm::new(15.0, 7.0, 2.0)),
        (PointMm::new(-5.0, 20.0, 2.0), PointMm::new(15.0, 30.0, -40.0)),
    ] {
        let w = wepl_between(&water, &a, &b);
        assert_eq!((w.wepl_mm, w.geometric_mm), (0.0, 0.0));
    }
    // Degenerate segments and non-finite input: 0, no NaN.
    let p = PointMm::new(1.0, 1.0, 1.0);
    assert_eq!(wepl_between(&water, &p, &p).wepl_mm, 0.0);
    let nan = PointMm::new(f64::NAN, 0.0, 0.0);
    assert_eq!(wepl_between(&water, &nan, &p).wepl_mm, 0.0);

    // Slabs: a ray lying in the interior boundary plane x = 2.5 between slabs 2 and 3 gets
    // their mean; on the outer face x = −0.5 half of slab 0; along the outer edge
    // (x = −0.5, y = −0.5) a quarter.
    let slabs = slab_volume(grid.clone());
    let w = wepl_between(
        &slabs,
        &PointMm::new(2.5, 2.0, -9.0),
        &PointMm::new(2.5, 2.7, 9.0),
    );
    let len_in = clip_len(
        [-0.5; 3],
        [5.5; 3],
        &PointMm::new(2.5, 2.0, -9.0),
        &PointMm::new(2.5, 2.7, 9.0),
    );
    let mean = 0.5 * (slab_rsp(2) + slab_rsp(3)) as f64;
    assert!(rel_close(w.wepl_mm, mean * len_in, 1e-6), "{w:?}");
    let w = wepl_between(
        &slabs,
        &PointMm::new(-0.5, 2.0, -9.0),
        &PointMm::new(-0.5, 2.0, 9.0),
    );
    assert!(rel_close(w.wepl_mm, 0.5 * slab_rsp(0) as f64 * 6.0, 1e-6));
    let w = wepl_between(
        &slabs,
        &PointMm::new(-0.5, -0.5, -9.0),
        &PointMm::new(-0.5, -0.5, 9.0),
    );
    assert!(rel_close(w.wepl_mm, 0.25 * slab_rsp(0) as f64 * 6.0, 1e-6));
}

#[test]
fn profile_depth_queries_invert_each_other() {
    let grid = Grid::axis_aligned([10, 4, 4], PointMm::origin(), [1.0; 3]).unwrap();
    let vol = slab_volume(grid);
    let ray = Ray::new(PointMm::new(-10.5, 1.0, 1.0), VectorMm::x());
    let mut p = RayProfile::default();
    trace_into(&vol, &ray, f64::INFINITY, &mut p);
    let p = p.view();
    assert_eq!(p.entry_t_mm(), Some(10.0));
    assert_eq!(p.exit_t_mm(), Some(20.0));
    // Through slabs 0 and 1 and half of 2: 0.5 + 0.6 + 0.35.
    assert!(rel_close(p.wepl_at_depth(12.5), 1.45, 1e-6));
    assert!(rel_close(p.depth_at_wepl(1.45).unwrap(), 12.5, 1e-6));
    assert_eq!(p.wepl_at_depth(3.0), 0.0);
    assert!(rel_close(p.wepl_at_depth(1e9), p.total_wepl_mm(), 1e-12));
    assert_eq!(p.depth_at_wepl(p.total_wepl_mm() + 0.1), None);
}

fn arb_grid() -> impl Strategy<Value = Grid> {
    (
        prop::array::uniform3(1usize..10),
        prop::array::uniform3(-50.0f64..50.0),
        prop::array::uniform3(0.3f64..3.0),
        prop::array::uniform3(-3.2f64..3.2),
    )
        .prop_map(|(dims, o, s, e)| {
            let r = Rotation3::from_euler_angles(e[0], e[1], e[2]);
            Grid::new(dims, PointMm::from(o), s, *r.matrix()).unwrap()
        })
}

fn oriented_clip_len(grid: &Grid, a: &PointMm, b: &PointMm) -> f64 {
    // Independent clip in patient space: six planes n·p = c along each direction cosine.
    let d = b - a;
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for ax in 0..3 {
        let nrm = grid.direction().column(ax).into_owned();
        let s = grid.spacing_mm()[ax];
        let base = nrm.dot(&grid.origin_mm().coords);
        let lo = base - 0.5 * s;
        let hi = base + (grid.dims()[ax] as f64 - 0.5) * s;
        let pa = nrm.dot(&a.coords);
        let dd = nrm.dot(&d);
        if dd.abs() < 1e-15 {
            if pa < lo || pa > hi {
                return 0.0;
            }
        } else {
            let (ta, tb) = ((lo - pa) / dd, (hi - pa) / dd);
            t0 = t0.max(ta.min(tb));
            t1 = t1.min(ta.max(tb));
        }
    }
    (t1 - t0).max(0.0) * d.norm()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn voxel_lengths_sum_to_clipped_length_and_lie_in_their_voxels(
        grid in arb_grid(),
        a in prop::array::uniform3(-80.0f64..80.0),
        b in prop::array::uniform3(-80.0f64..80.0),
    ) {
        let (a, b) = (PointMm::from(a), PointMm::from(b));
        let (ray, len) = Ray::through(&a, &b);
        let segs = voxel_segments(&grid, &ray, len);
        let sum: f64 = segs.iter().map(|s| s.1).sum();
        let want = oriented_clip_len(&grid, &a, &b);
        prop_assert!((sum - want).abs() < 1e-9 * (1.0 + len), "{sum} vs {want}");
        let mut t = 0.0;
        let entry = segs.first().map(|_| {
            // Recover the entry from the clipped length: the walk starts where the box does.
            let mut p = RayProfile::default();
            let vol = Volume::filled(grid.clone(), 1.0f32);
            trace_into(&vol, &ray, len, &mut p);
            p.view().entry_t_mm().unwrap_or(0.0)
        });
        if let Some(e) = entry { t = e; }
        for (ijk, l) in &segs {
            let mid = ray.at(t + 0.5 * l);
            t += l;
            if *l > 1e-6 {
                let u = grid.patient_to_index(&mid);
                for ax in 0..3 {
                    prop_assert!((u[ax] - ijk[ax] as f64).abs() <= 0.5 + 1e-9, "{u:?} not in {ijk:?}");
                }
            }
        }
    }

    #[test]
    fn wepl_is_additive_along_a_ray(
        grid in arb_grid(),
        a in prop::array::uniform3(-80.0f64..80.0),
        b in prop::array::uniform3(-80.0f64..80.0),
        f in 0.0f64..1.0,
        seed in 0u32..1000,
    ) {
        let mut vol = Volume::filled(grid.clone(), 0.0f32);
        for (n, v) in vol.as_slice_mut().iter_mut().enumerate() {
            *v = ((n as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2000) as f32 / 1000.0;
        }
        let (a, b) = (PointMm::from(a), PointMm::from(b));
        let m = a + (b - a) * f;
        let whole = wepl_between(&vol, &a, &b).wepl_mm;
        let parts = wepl_between(&vol, &a, &m).wepl_mm + wepl_between(&vol, &m, &b).wepl_mm;
        prop_assert!(whole.is_finite());
        prop_assert!((whole - parts).abs() < 1e-9 * (1.0 + (b - a).norm()), "{whole} vs {parts}");
    }
}
