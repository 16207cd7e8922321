//! `ionguide inspect PATH... [--json]`: what a folder of DICOM holds, checked.
//!
//! CT series are ingested whole (every check of `dicom::ct` applies), structure sets are
//! rasterized on the CT grid of the same Frame of Reference given in the same call, and plans
//! are read with their warnings and tied to a CT by Frame of Reference. Spatial Registration
//! objects are read against each CT series given: the one whose Frame of Reference they map
//! another one onto is taken as the planning CT, and the map is shown.

use std::path::PathBuf;

use anyhow::Context;
use ionguide::dicom::{classify, ct, rtplan, rtstruct, spatial_registration};
use ionguide::volume::CtVolume;
use serde::Serialize;

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders (searched recursively) holding CT slices, RT Structure Sets, RT Ion
    /// Plans and Spatial Registrations.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print JSON (keys: series[], structures[], plans[], registrations[]) instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    series: Vec<SeriesReport>,
    structures: Vec<StructureReport>,
    plans: Vec<PlanReport>,
    registrations: Vec<RegistrationReport>,
    records: Vec<RecordReport>,
    skipped: Vec<SkippedReport>,
}

/// An RT Ion Beams Treatment Record given as a file.
#[derive(Debug, Serialize)]
struct RecordReport {
    file: PathBuf,
    sop_instance_uid: String,
    plan_sop_instance_uid: String,
    primary_dosimeter_unit: String,
    treatment_date: String,
    treatment_time: String,
    beams: Vec<RecordBeamReport>,
}

#[derive(Debug, Serialize)]
struct RecordBeamReport {
    beam_number: i32,
    beam_name: String,
    specified_meterset: Option<f64>,
    delivered_meterset: Option<f64>,
    termination_status: String,
    termination_code: Option<String>,
    termination_description: Option<String>,
    control_points: usize,
    delivered_pieces: usize,
}

/// Reads the files among `paths` that are treatment records; returns them and the rest.
fn split_records(paths: &[PathBuf]) -> anyhow::Result<(Vec<RecordReport>, Vec<PathBuf>)> {
    use ionguide::dicom::rtrecord::{
        read_treatment_record, RtRecordError, RT_ION_BEAMS_TREATMENT_RECORD_SOP_CLASS,
    };
    let mut records = Vec::new();
    let mut rest = Vec::new();
    for p in paths {
        let is_record = p.is_file()
            && ionguide::dicom::object_header::read_object_header(
                &std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
            )
            .is_ok_and(|h| h.sop_class_uid == RT_ION_BEAMS_TREATMENT_RECORD_SOP_CLASS);
        if !is_record {
            rest.push(p.clone());
            continue;
        }
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        let r = read_treatment_record(&bytes)
            .map_err(|e: RtRecordError| anyhow::anyhow!(e))
            .with_context(|| format!("{}: not a readable treatment record", p.display()))?;
        records.push(RecordReport {
            file: p.clone(),
            sop_instance_uid: r.sop_instance_uid,
            plan_sop_instance_uid: r.record.plan_sop_instance_uid.clone(),
            primary_dosimeter_unit: r.primary_dosimeter_unit,
            treatment_date: r.treatment_date_time.0,
            treatment_time: r.treatment_date_time.1,
            beams: r
                .beams
                .iter()
                .zip(&r.record.beams)
                .map(|(s, b)| RecordBeamReport {
                    beam_number: s.beam_number,
                    beam_name: s.beam_name.clone(),
                    specified_meterset: s.specified_meterset,
                    delivered_meterset: s.delivered_meterset,
                    termination_status: s.termination_status.clone(),
                    termination_code: s.termination_code.clone(),
                    termination_description: s.termination_description.clone(),
                    control_points: s.control_points,
                    delivered_pieces: b.pieces().count(),
                })
                .collect(),
        });
    }
    Ok((records, rest))
}

#[derive(Debug, Serialize)]
struct RegistrationReport {
    file: PathBuf,
    /// Index into `series` of the CT taken as the planning CT; `None` when the object maps
    /// no other Frame of Reference onto any series given (then `error` says why).
    series_index: Option<usize>,
    planning_frame_of_reference_uid: Option<String>,
    room_frame_of_reference_uid: Option<String>,
    /// Planning → room: translation, mm, and rotation as x-y-z angles (R = Rz·Ry·Rx), degrees.
    translation_mm: Option<[f64; 3]>,
    rotation_xyz_deg: Option<[f64; 3]>,
    /// Planning → room as a row-major 4×4 matrix.
    matrix: Option<[f64; 16]>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct SeriesReport {
    rows: usize,
    columns: usize,
    slices: usize,
    /// DICOM order: [row spacing, column spacing].
    pixel_spacing_mm: [f64; 2],
    slice_spacing_mm: f64,
    max_spacing_deviation_mm: f64,
    origin_mm: [f64; 3],
    orientation: [f64; 6],
    transfer_syntax: String,
    hu_min: i16,
    hu_max: i16,
    hu_mean: f64,
    hu_sum: i64,
    frame_of_reference_uid: String,
    series_instance_uid: Option<String>,
    patient_id: Option<String>,
    sop_class_uid: String,
    first_file: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct StructureReport {
    name: String,
    file: PathBuf,
    frame_of_reference_uid: String,
    contours: usize,
    /// Rasterized on the CT series of the same Frame of Reference (index into `series`);
    /// `None` when no such series was given.
    series_index: Option<usize>,
    voxels: Option<usize>,
    volume_cc: Option<f64>,
    centroid_mm: Option<[f64; 3]>,
    bbox_min_mm: Option<[f64; 3]>,
    bbox_max_mm: Option<[f64; 3]>,
    skipped_contours: usize,
}

#[derive(Debug, Serialize)]
struct PlanReport {
    file: PathBuf,
    label: String,
    frame_of_reference_uid: String,
    /// Index into `series` of the CT with the plan's Frame of Reference.
    series_index: Option<usize>,
    warnings: Vec<String>,
    beams: Vec<BeamReport>,
}

#[derive(Debug, Serialize)]
struct BeamReport {
    name: String,
    number: i32,
    radiation_type: String,
    ion: IonReport,
    gantry_angle_deg: f64,
    couch_angle_deg: f64,
    isocenter_mm: [f64; 3],
    virtual_sad_mm: Option<[f64; 2]>,
    layers: usize,
    spots: usize,
    energy_min_mev_u: Option<f64>,
    energy_max_mev_u: Option<f64>,
}

#[derive(Debug, Serialize)]
struct IonReport {
    z: u8,
    a: u8,
}

#[derive(Debug, Serialize)]
struct SkippedReport {
    file: PathBuf,
    reason: String,
}

fn arr3(p: &ionguide::units::PointMm) -> [f64; 3] {
    [p.x, p.y, p.z]
}

fn series_report(series: &ct::CtSeries) -> SeriesReport {
    let grid = series.volume.grid();
    let [columns, rows, slices] = grid.dims();
    let spacing = grid.spacing_mm();
    let d = grid.direction();
    let voxels = series.volume.as_slice();
    let (mut hu_min, mut hu_max, mut hu_sum) = (i16::MAX, i16::MIN, 0i64);
    for &v in voxels {
        hu_min = hu_min.min(v);
        hu_max = hu_max.max(v);
        hu_sum += i64::from(v);
    }
    SeriesReport {
        rows,
        columns,
        slices,
        pixel_spacing_mm: [spacing[1], spacing[0]],
        slice_spacing_mm: series.meta.slice_spacing_mm,
        max_spacing_deviation_mm: series.meta.max_spacing_deviation_mm,
        origin_mm: arr3(&grid.origin_mm()),
        orientation: [d[(0, 0)], d[(1, 0)], d[(2, 0)], d[(0, 1)], d[(1, 1)], d[(2, 1)]],
        transfer_syntax: series.meta.transfer_syntax_uid.clone(),
        hu_min,
        hu_max,
        hu_mean: hu_sum as f64 / voxels.len() as f64,
        hu_sum,
        frame_of_reference_uid: series.meta.frame_of_reference_uid.clone(),
        series_instance_uid: series.meta.series_instance_uid.clone(),
        patient_id: series.meta.patient_id.clone(),
        sop_class_uid: series.meta.sop_class_uid.clone(),
        first_file: series.meta.files.first().cloned(),
    }
}

fn build_report(paths: &[PathBuf]) -> anyhow::Result<Report> {
    let (records, paths) = split_records(paths)?;
    let found = if paths.is_empty() {
        classify::Classified::default()
    } else {
        classify::classify_paths(&paths)?
    };
    let mut series_reports = Vec::new();
    let mut volumes: Vec<(String, CtVolume)> = Vec::new();
    for files in &found.ct_series {
        let series = ct::read_series_files(files)
            .with_context(|| format!("reading the CT series of {} file(s)", files.len()))?;
        series_reports.push(series_report(&series));
        volumes.push((series.meta.frame_of_reference_uid.clone(), series.volume));
    }
    let series_for = |for_uid: &str| volumes.iter().position(|(uid, _)| uid == for_uid);

    let mut structures = Vec::new();
    for file in &found.structure_sets {
        let set = rtstruct::read_structure_set(file)?;
        let index = series_for(&set.frame_of_reference_uid);
        if index.is_none() {
            tracing::warn!(file = %file.display(), frame_of_reference = %set.frame_of_reference_uid,
                "no CT series with this structure set's Frame of Reference was given: ROIs are not rasterized");
        }
        for roi in &set.rois {
            let mask = index.map(|i| roi.rasterize(volumes[i].1.grid()));
            structures.push(StructureReport {
                name: roi.name.clone(),
                file: file.clone(),
                frame_of_reference_uid: set.frame_of_reference_uid.clone(),
                contours: roi.contours.len(),
                series_index: index,
                voxels: mask.as_ref().map(|m| m.voxels),
                volume_cc: mask.as_ref().map(|m| m.volume_cc),
                centroid_mm: mask.as_ref().and_then(|m| m.centroid_mm.as_ref().map(arr3)),
                bbox_min_mm: mask
                    .as_ref()
                    .and_then(|m| m.bbox.as_ref().map(|b| arr3(&b.min_mm))),
                bbox_max_mm: mask
                    .as_ref()
                    .and_then(|m| m.bbox.as_ref().map(|b| arr3(&b.max_mm))),
                skipped_contours: mask.as_ref().map_or(0, |m| m.skipped.len()),
            });
        }
    }

    let mut plans = Vec::new();
    for file in &found.ion_plans {
        let (plan, warnings) = rtplan::read_plan(file)?;
        let index = series_for(&plan.frame_of_reference_uid);
        if let Some(i) = index {
            rtplan::check_isocenters_inside(&plan, volumes[i].1.grid())
                .with_context(|| format!("checking {} against its CT", file.display()))?;
        }
        plans.push(PlanReport {
            file: file.clone(),
            label: plan.label.clone(),
            frame_of_reference_uid: plan.frame_of_reference_uid.clone(),
            series_index: index,
            warnings: warnings.iter().map(ToString::to_string).collect(),
            beams: plan
                .beams
                .iter()
                .map(|b| {
                    let energies = b.energy_range_mev_u();
                    BeamReport {
                        name: b.name.clone(),
                        number: b.number,
                        radiation_type: b.radiation_type.clone(),
                        ion: IonReport {
                            z: b.ion.z,
                            a: b.ion.a,
                        },
                        gantry_angle_deg: b.gantry_angle_deg,
                        couch_angle_deg: b.couch_angle_deg,
                        isocenter_mm: arr3(&b.isocenter_mm),
                        virtual_sad_mm: b.virtual_sad_mm,
                        layers: b.layers.len(),
                        spots: b.spot_count(),
                        energy_min_mev_u: energies.map(|e| e.0),
                        energy_max_mev_u: energies.map(|e| e.1),
                    }
                })
                .collect(),
        });
    }
    let registrations = found
        .spatial_registrations
        .iter()
        .map(|file| registration_report(file, &volumes))
        .collect();
    Ok(Report {
        series: series_reports,
        structures,
        plans,
        registrations,
        records,
        skipped: found
            .skipped
            .into_iter()
            .map(|(file, reason)| SkippedReport { file, reason })
            .collect(),
    })
}

/// A registration read against each series' Frame of Reference in turn.
fn registration_report(file: &std::path::Path, volumes: &[(String, CtVolume)]) -> RegistrationReport {
    let mut error = None;
    for (i, (for_uid, _)) in volumes.iter().enumerate() {
        match spatial_registration::read_room_setup(file, for_uid) {
            Ok(setup) => {
                let m = setup.planning_to_room.matrix();
                let t = setup.planning_to_room.translation_mm;
                return RegistrationReport {
                    file: file.to_owned(),
                    series_index: Some(i),
                    planning_frame_of_reference_uid: Some(setup.planning_frame_of_reference_uid),
                    room_frame_of_reference_uid: Some(setup.room_frame_of_reference_uid),
                    translation_mm: Some([t.x, t.y, t.z]),
                    rotation_xyz_deg: Some(setup.planning_to_room.rotation_xyz_deg()),
                    matrix: Some(std::array::from_fn(|k| m[(k / 4, k % 4)])),
                    error: None,
                };
            }
            // a registration that does not name this series says so; any other fault is
            // the file's own and is the same for every series
            Err(e @ spatial_registration::RegistrationError::PlanningNotRegistered { .. }) => {
                error.get_or_insert(e.to_string());
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    RegistrationReport {
        file: file.to_owned(),
        series_index: None,
        planning_frame_of_reference_uid: None,
        room_frame_of_reference_uid: None,
        translation_mm: None,
        rotation_xyz_deg: None,
        matrix: None,
        error: Some(error.unwrap_or_else(|| "no CT series given to read it against".into())),
    }
}

/// Runs `inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let report = build_report(&args.paths)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if report.series.is_empty()
        && report.structures.is_empty()
        && report.plans.is_empty()
        && report.registrations.is_empty()
        && report.records.is_empty()
    {
        anyhow::bail!(
            "no CT series, RT Structure Set, RT Ion Plan, Spatial Registration or treatment record found in the given paths"
        );
    }
    for r in &report.records {
        println!(
            "Treatment record {}: plan {}, treated {} {} UTC, {} beam(s), metersets in {}",
            r.file.display(),
            r.plan_sop_instance_uid,
            r.treatment_date,
            r.treatment_time,
            r.beams.len(),
            r.primary_dosimeter_unit
        );
        for b in &r.beams {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6}"));
            println!(
                "  beam {} {:?}: delivered {} of {} specified, {} control point deliveries, {} spot pieces; {} {} ({})",
                b.beam_number,
                b.beam_name,
                f(b.delivered_meterset),
                f(b.specified_meterset),
                b.control_points,
                b.delivered_pieces,
                b.termination_status,
                b.termination_code.as_deref().unwrap_or("-"),
                b.termination_description.as_deref().unwrap_or("-")
            );
        }
    }
    for (i, s) in report.series.iter().enumerate() {
        println!(
            "CT series {i}: {} × {} × {} voxels, {:.4} × {:.4} × {:.4} mm (slice spacing deviation ≤ {:.3} mm)",
            s.columns,
            s.rows,
            s.slices,
            s.pixel_spacing_mm[1],
            s.pixel_spacing_mm[0],
            s.slice_spacing_mm,
            s.max_spacing_deviation_mm
        );
        println!(
            "  origin ({:.2}, {:.2}, {:.2}) mm, orientation [{}]",
            s.origin_mm[0],
            s.origin_mm[1],
            s.origin_mm[2],
            s.orientation.map(|v| format!("{v:.4}")).join(", ")
        );
        println!(
            "  HU {} … {}, mean {:.2}; transfer syntax {}",
            s.hu_min, s.hu_max, s.hu_mean, s.transfer_syntax
        );
        println!("  Frame of Reference {}", s.frame_of_reference_uid);
        if let Some(p) = &s.patient_id {
            println!("  Patient ID {p}");
        }
    }
    for r in &report.structures {
        match (r.voxels, r.volume_cc, r.centroid_mm) {
            (Some(n), Some(cc), Some(c)) => println!(
                "ROI {:?}: {} contours, {n} voxels, {cc:.2} cc, centroid ({:.2}, {:.2}, {:.2}) mm",
                r.name, r.contours, c[0], c[1], c[2]
            ),
            (Some(n), _, _) => println!("ROI {:?}: {} contours, {n} voxels", r.name, r.contours),
            _ => println!(
                "ROI {:?}: {} contours (no CT of its Frame of Reference given: not rasterized)",
                r.name, r.contours
            ),
        }
    }
    for p in &report.plans {
        println!(
            "Plan {:?} ({}): {} beam(s){}",
            p.label,
            p.file.display(),
            p.beams.len(),
            match p.series_index {
                Some(i) => format!(", on CT series {i}"),
                None => ", no CT of its Frame of Reference given".to_string(),
            }
        );
        for b in &p.beams {
            println!(
                "  beam {:?}: {}{} (Z={}, A={}), gantry {:.1}°, couch {:.1}°, isocenter ({:.2}, {:.2}, {:.2}) mm, {} layers, {} spots, {:.1}–{:.1} MeV/u",
                b.name,
                b.ion.a,
                ionguide::units::Ion { z: b.ion.z, a: b.ion.a }.symbol(),
                b.ion.z,
                b.ion.a,
                b.gantry_angle_deg,
                b.couch_angle_deg,
                b.isocenter_mm[0],
                b.isocenter_mm[1],
                b.isocenter_mm[2],
                b.layers,
                b.spots,
                b.energy_min_mev_u.unwrap_or(f64::NAN),
                b.energy_max_mev_u.unwrap_or(f64::NAN),
            );
        }
        for w in &p.warnings {
            println!("  warning: {w}");
        }
    }
    for r in &report.registrations {
        match (r.series_index, r.translation_mm, r.rotation_xyz_deg, &r.room_frame_of_reference_uid) {
            (Some(i), Some(t), Some(a), Some(room)) => println!(
                "Registration {}: CT series {i} → room Frame of Reference {room}: translation ({:.2}, {:.2}, {:.2}) mm, rotation x {:.3}°, y {:.3}°, z {:.3}°",
                r.file.display(),
                t[0],
                t[1],
                t[2],
                a[0],
                a[1],
                a[2]
            ),
            _ => println!(
                "Registration {}: not usable as a setup registration: {}",
                r.file.display(),
                r.error.as_deref().unwrap_or("unknown")
            ),
        }
    }
    for s in &report.skipped {
        tracing::info!(file = %s.file.display(), reason = %s.reason, "skipped");
    }
    Ok(())
}
