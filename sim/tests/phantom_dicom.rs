//! The phantom round-trips through the project's own DICOM readers, its structures match the
//! analytic geometry, and moved renders put the tumor exactly where it was sent.

use std::f64::consts::PI;

use ionguide::dicom::ct::read_series_bytes;
use ionguide::dicom::rtstruct::read_structure_set_bytes;
use ionguide::units::PointMm;
use ionguide::volume::CtVolume;
use ionguide_sim::anatomy::phantom::{Phantom, PhantomError, PhantomSpec};
use ionguide_sim::imaging::frames::{planning_ids, write_ct_series, write_structure_set};

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(Vec::as_slice).collect()
}

#[test]
fn ct_series_reads_back_voxel_for_voxel() {
    let ph = Phantom::thorax(&PhantomSpec::small()).unwrap();
    let ids = planning_ids(&ph);
    let slices = write_ct_series(&ph.ct, &ids).unwrap();
    assert_eq!(slices.len(), 24);
    let series = read_series_bytes(&refs(&slices)).unwrap();
    assert_eq!(series.volume.grid(), ph.ct.grid());
    assert_eq!(series.volume.as_slice(), ph.ct.as_slice());
    assert_eq!(series.meta.frame_of_reference_uid, ph.spec.frame_of_reference_uid);
    assert_eq!(series.meta.patient_id.as_deref(), Some("IONGUIDE-PHANTOM"));
    assert_eq!(
        series.meta.series_instance_uid.as_deref(),
        Some(ids.series_instance_uid.as_str())
    );
    assert_eq!(series.meta.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    assert!((series.meta.slice_spacing_mm - 5.0).abs() < 1e-9);
    // Slices handed over in reverse still sort by position.
    let mut rev = refs(&slices);
    rev.reverse();
    assert_eq!(
        read_series_bytes(&rev).unwrap().volume.as_slice(),
        ph.ct.as_slice()
    );
}

#[test]
fn structure_set_reads_back_and_gtv_matches_the_sphere() {
    let ph = Phantom::thorax(&PhantomSpec::default()).unwrap();
    let ids = planning_ids(&ph);
    let bytes = write_structure_set(&ph.structures, &ids, ph.grid().dims()[2], "2.25.99").unwrap();
    let ss = read_structure_set_bytes(&bytes, "<memory>/RS").unwrap();
    assert_eq!(ss.frame_of_reference_uid, ph.spec.frame_of_reference_uid);
    assert_eq!(ss.names(), vec!["BODY", "LUNG_L", "LUNG_R", "GTV", "PTV"]);
    for (name, r) in [("GTV", ph.tumor_radius_mm), ("PTV", ph.ptv_radius_mm)] {
        let m = ss.roi(name).unwrap().rasterize(ph.grid());
        let analytic_cc = 4.0 / 3.0 * PI * r.powi(3) / 1000.0;
        let rel = (m.volume_cc - analytic_cc) / analytic_cc;
        assert!(rel.abs() < 0.03, "{name}: {} cc vs {analytic_cc} cc", m.volume_cc);
        let c = m.centroid_mm.unwrap();
        let t = PointMm::from(ph.tumor_center_mm);
        assert!((c - t).norm() < 0.5, "{name} centroid {c:?}");
    }
    // The contoured GTV is where the CT shows the tumor: every GTV voxel is tumor-dense.
    let gtv = ss.roi("GTV").unwrap().rasterize(ph.grid());
    let inside: Vec<i16> = gtv
        .mask
        .as_slice()
        .iter()
        .zip(ph.ct.as_slice())
        .filter(|(m, _)| **m != 0)
        .map(|(_, hu)| *hu)
        .collect();
    let dense = inside.iter().filter(|hu| **hu > -400).count() as f64 / inside.len() as f64;
    assert!(dense > 0.97, "only {dense} of GTV voxels are tumor");
    // Inside BODY on the right (x < 0), LUNG_R is exactly where the CT is lung-dense (or
    // the tumor), up to polygon-vs-ellipse edge voxels.
    let lung = ss.roi("LUNG_R").unwrap().rasterize(ph.grid());
    let body = ss.roi("BODY").unwrap().rasterize(ph.grid());
    let g = ph.grid();
    let [nx, ny, _] = g.dims();
    let (mut agree, mut total) = (0usize, 0usize);
    for (idx, hu) in ph.ct.as_slice().iter().enumerate() {
        let p = g.index_to_patient([
            (idx % nx) as f64,
            ((idx / nx) % ny) as f64,
            (idx / (nx * ny)) as f64,
        ]);
        if p.x >= 0.0 || body.mask.as_slice()[idx] == 0 {
            continue;
        }
        total += 1;
        let in_lung = lung.mask.as_slice()[idx] != 0;
        let ct_lung = *hu < -500 || ph.in_ptv(&p, 0.0);
        agree += usize::from(in_lung == ct_lung);
    }
    assert!(agree as f64 / total as f64 > 0.99, "{agree}/{total}");
}

fn tumor_centroid(v: &CtVolume, near: [f64; 3]) -> [f64; 3] {
    // Mass-weighted centroid of (HU + 800) over the lung-to-tumor range in a 50 mm box.
    let g = v.grid();
    let [nx, ny, nz] = g.dims();
    let mut s = [0.0; 3];
    let mut w = 0.0;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                if (0..3).any(|a| (p[a] - near[a]).abs() > 25.0) {
                    continue;
                }
                let hu = f64::from(*v.get(i, j, k).unwrap());
                let m = (hu + 800.0).clamp(0.0, 830.0);
                // Texture is ±20 HU in lung: ignore contrast below 200 HU above lung.
                let m = if m < 200.0 { 0.0 } else { m };
                w += m;
                for a in 0..3 {
                    s[a] += m * p[a];
                }
            }
        }
    }
    [s[0] / w, s[1] / w, s[2] / w]
}

#[test]
fn moved_render_puts_the_tumor_where_it_was_sent() {
    let spec = PhantomSpec {
        texture_hu: 0.0,
        ..PhantomSpec::default()
    };
    let ph = Phantom::thorax(&spec).unwrap();
    let mut out = ph.ct.clone();
    ph.render_moved([0.0; 3], &mut out).unwrap();
    assert_eq!(
        out.as_slice(),
        ph.ct.as_slice(),
        "zero displacement is the planning CT"
    );
    let c0 = tumor_centroid(&ph.ct, ph.tumor_center_mm);
    for d in [[0.0, 0.0, -7.3], [1.2, -2.6, 4.4], [-0.7, 1.9, -9.1]] {
        ph.render_moved(d, &mut out).unwrap();
        let c = tumor_centroid(&out, ph.tumor_center_mm);
        for a in 0..3 {
            let moved = c[a] - c0[a];
            assert!(
                (moved - d[a]).abs() < 0.15,
                "axis {a}: moved {moved}, sent {}",
                d[a]
            );
        }
        // Bone and soft tissue far from the tumor do not move.
        let far = ph.grid().patient_to_index(&PointMm::new(0.0, 65.0, 0.0));
        let (i, j, k) = (far[0] as usize, far[1] as usize, far[2] as usize);
        assert_eq!(out.get(i, j, k), ph.ct.get(i, j, k));
    }
    assert!(matches!(
        ph.render_moved([0.0, 0.0, 40.0], &mut out),
        Err(PhantomError::BadDisplacement { .. })
    ));
}

#[test]
fn slab_render_equals_the_same_slices_of_the_full_render() {
    let ph = Phantom::thorax(&PhantomSpec::small()).unwrap();
    let d = [0.5, -1.5, -6.0];
    let mut full = ph.ct.clone();
    ph.render_moved(d, &mut full).unwrap();
    let slab_grid = ph.slab_grid(8).unwrap();
    let mut slab = CtVolume::filled(slab_grid, 0);
    ph.render_moved(d, &mut slab).unwrap();
    let k0 = ph.slab_offset(slab.grid()).unwrap();
    let plane = 128 * 128;
    assert_eq!(slab.as_slice(), &full.as_slice()[k0 * plane..(k0 + 8) * plane]);
    // The slab contains the tumor centre.
    let z0 = slab.grid().origin_mm().z;
    let zc = ph.tumor_center_mm[2];
    assert!(z0 <= zc && zc <= z0 + 7.0 * 5.0);

    let wrong =
        ionguide::geometry::Grid::axis_aligned([128, 128, 4], PointMm::new(0.0, 0.0, 0.0), [3.0, 3.0, 5.0])
            .unwrap();
    let mut bad = CtVolume::filled(wrong, 0);
    assert!(matches!(
        ph.render_moved(d, &mut bad),
        Err(PhantomError::GridMismatch { .. })
    ));
}

#[test]
fn same_seed_same_phantom_other_seed_other_texture() {
    let a = Phantom::thorax(&PhantomSpec::small()).unwrap();
    let b = Phantom::thorax(&PhantomSpec::small()).unwrap();
    assert_eq!(a.ct.as_slice(), b.ct.as_slice());
    let c = Phantom::thorax(&PhantomSpec {
        seed: 99,
        ..PhantomSpec::small()
    })
    .unwrap();
    assert_ne!(a.ct.as_slice(), c.ct.as_slice());
}

/// A session folder reused for a smaller phantom (e.g. `ionguide gate --workload reference`
/// then `--workload small` in the same `--out`) must not keep the longer series' extra slices,
/// nor a setup registration the new session does not have.
#[test]
fn a_session_rewritten_with_fewer_slices_loads_only_the_new_series() {
    use ionguide_sim::planning::PlannerOptions;
    use ionguide_sim::replay::load_session;
    use ionguide_sim::scenario::write_phantom_session;
    let dir = tempfile::tempdir().unwrap();
    let longer = PhantomSpec {
        dims: [128, 128, 30],
        ..PhantomSpec::small()
    };
    // the longer session's frames came from an in-room scanner with its own coordinates
    let first = write_phantom_session(
        dir.path(),
        &longer,
        &PlannerOptions::default(),
        50.0,
        Some(ionguide_sim::scenario::in_room_scanner()),
    )
    .unwrap();
    assert!(first.room.is_some() && dir.path().join("REG.dcm").exists());
    // the session keeps the hash of exactly the registration bytes it parsed (for the audit log)
    let (_, with_room) = load_session(&first.config).unwrap();
    use sha2::Digest;
    let want: [u8; 32] = sha2::Sha256::digest(std::fs::read(dir.path().join("REG.dcm")).unwrap()).into();
    assert_eq!(with_room.options.room_setup_sha256, Some(want));
    let (read, written) = (with_room.options.room_setup.unwrap(), first.room.unwrap());
    assert_eq!(
        read.room_frame_of_reference_uid,
        written.room_frame_of_reference_uid
    );
    // through the file's decimal strings: equal to well below a micrometre
    let gap = (read.planning_to_room.matrix() - written.planning_to_room.matrix())
        .abs()
        .max();
    assert!(gap < 1e-9, "{gap}");
    // a file of the user's own in the folder stays
    std::fs::write(dir.path().join("ct/notes.txt"), b"mine").unwrap();
    let s = write_phantom_session(
        dir.path(),
        &PhantomSpec::small(),
        &PlannerOptions::default(),
        50.0,
        None,
    )
    .unwrap();
    let (_, session) = load_session(&s.config).unwrap();
    assert_eq!(session.planning_ct.grid().dims(), [128, 128, 24]);
    assert!(session.options.room_setup.is_none());
    assert!(session.options.room_setup_sha256.is_none());
    assert!(
        !dir.path().join("REG.dcm").exists(),
        "the earlier session's registration is gone"
    );
    assert!(dir.path().join("ct/notes.txt").exists());
}
