//! `ionguide register`: rigid registration of a frame series against a planning CT series;
//! optionally written as the session's setup registration (a DICOM Spatial Registration from
//! the planning CT's Frame of Reference to the frame's). With `--deformable`, a demons field
//! on top of the rigid result in the target region, the target carried into the frame
//! (volume, change from plan, centroid) and optionally written as an RT Structure Set.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use ionguide::dicom::ct::write::{Acquired, CtSeriesIds};
use ionguide::dicom::rtstruct::{write_structure_set, StructureSetIds};
use ionguide::dicom::spatial_registration::{write_room_setup_bytes, RegistrationIds};
use ionguide::dicom::write::Producer;
use ionguide::dicom::{ct::read_series_dir, rtstruct::read_roi};
use ionguide::geometry::{RigidTransform, RoomSetup};
use ionguide::register::{
    BoxMm, DeformFixed, DeformOptions, DeformVerdict, DeformableRegistrar, FixedContext, RegisterOptions,
    Registrar, Roi, Verdict, DEFAULT_MARGIN_MM,
};
use ionguide::structure::{Roi as StructureRoi, StructureSet};
use ionguide::units::PointMm;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Register a frame (moving) to the planning CT (fixed) over a target region.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Planning CT series directory (fixed image).
    #[arg(long)]
    fixed: PathBuf,
    /// Frame series directory (moving image).
    #[arg(long)]
    moving: PathBuf,
    /// RT Structure Set holding the target ROI (with --roi).
    #[arg(long, requires = "roi")]
    structures: Option<PathBuf>,
    /// Name of the target ROI in the structure set.
    #[arg(long, requires = "structures")]
    roi: Option<String>,
    /// Margin around the target's bounding box, mm.
    #[arg(long, default_value_t = DEFAULT_MARGIN_MM)]
    margin_mm: f64,
    /// Region box instead of a structure: x0,y0,z0,x1,y1,z1 in patient mm.
    #[arg(long = "box", value_delimiter = ',', conflicts_with = "structures")]
    box_mm: Option<Vec<f64>>,
    /// Start the search from this translation (planning → frame, mm: x,y,z) instead of the
    /// identity: for a frame whose scanner coordinates lie far from the planning CT's.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    initial_translation_mm: Option<Vec<f64>>,
    /// Write the result as a setup registration (DICOM Spatial Registration, planning CT's
    /// Frame of Reference → the frame's) for `planning.setup_registration`.
    #[arg(long)]
    write_setup_registration: Option<PathBuf>,
    /// Also register deformably (demons) in the target region on top of the rigid result,
    /// and carry the target into the frame (needs --structures and --roi).
    #[arg(long, requires = "structures")]
    deformable: bool,
    /// Write the target carried into the frame as a new RT Structure Set in the frame's
    /// Frame of Reference (with --deformable).
    #[arg(long, requires = "deformable")]
    write_structures: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

const PRODUCER: Producer = Producer {
    manufacturer: "ionguide",
    implementation_class_uid: "2.25.216143920517462233091582931405728375129",
    implementation_version_name: "IONGUIDE_0.1",
};

/// The deformable part of the report.
#[derive(Debug, Serialize)]
struct DeformReport {
    /// Target volume in the frame, cm³.
    volume_cc: f64,
    /// Planning target volume, cm³.
    planned_volume_cc: f64,
    /// Change from plan, %.
    volume_change_pct: f64,
    /// Target centroid in the frame, mm.
    target_centroid_mm: Option<[f64; 3]>,
    /// Smallest Jacobian determinant of the field.
    jacobian_min: f64,
    /// Largest displacement, mm.
    field_max_mm: f64,
    /// Largest inverse-consistency error, mm.
    inverse_error_mm: f64,
    /// NCC over the region after deformation.
    deformable_similarity: f64,
    /// Demons iterations.
    deformable_iterations: u32,
    /// "accept" or "reject: …".
    deformable_verdict: String,
}
#[derive(Debug, Serialize)]
struct Report {
    translation_mm: [f64; 3],
    rotation_deg: [f64; 3],
    rotation_vector_rad: [f64; 3],
    matrix: [f64; 16],
    tumor_shift_mm: [f64; 3],
    target_planned_mm: [f64; 3],
    iterations: u32,
    converged: bool,
    similarity: f64,
    rms_hu: f64,
    overlap_fraction: f64,
    /// Largest residual misalignment of an octant of the region after the rigid fit, mm
    /// (null: not measured).
    residual_mm: Option<f64>,
    verdict: String,
    /// Registration only: series ingest and ROI sampling (once per plan) excluded.
    elapsed_ms: f64,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    deformable: Option<DeformReport>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let fixed_series = read_series_dir(&args.fixed)
        .with_context(|| format!("reading planning CT {}", args.fixed.display()))?;
    let moving_series =
        read_series_dir(&args.moving).with_context(|| format!("reading frame {}", args.moving.display()))?;
    if args.write_setup_registration.is_some()
        && fixed_series.meta.frame_of_reference_uid == moving_series.meta.frame_of_reference_uid
    {
        bail!(
            "the frame shares the planning CT's Frame of Reference {}: frames are taken in planning \
             coordinates and no setup registration is needed",
            fixed_series.meta.frame_of_reference_uid
        );
    }
    let fixed = &fixed_series.volume;
    let moving = &moving_series.volume;
    let mut target_mask = None;
    let region = match (&args.structures, &args.roi, &args.box_mm) {
        (Some(rs), Some(name), _) => {
            let (_, roi) =
                read_roi(rs, name).with_context(|| format!("reading ROI {name} from {}", rs.display()))?;
            let raster = roi.rasterize(fixed.grid());
            let region = Roi::from_mask(&raster.mask, args.margin_mm)
                .with_context(|| format!("ROI {name} on the planning CT grid"))?;
            target_mask = Some(raster.mask);
            region
        }
        (_, _, Some(b)) if b.len() == 6 => Roi::from_box(BoxMm::new(
            PointMm::new(b[0], b[1], b[2]),
            PointMm::new(b[3], b[4], b[5]),
        )?),
        (_, _, Some(b)) => bail!("--box takes 6 numbers x0,y0,z0,x1,y1,z1 (mm), got {}", b.len()),
        _ => bail!("give a region: --structures RS --roi NAME, or --box x0,y0,z0,x1,y1,z1"),
    };
    let options = RegisterOptions::default();
    let context = FixedContext::new(fixed, region, &options)?;
    let mut registrar = Registrar::new(options);
    let initial = match &args.initial_translation_mm {
        Some(t) if t.len() == 3 && t.iter().all(|v| v.is_finite()) => RigidTransform::from_rotation_vector(
            nalgebra::Vector3::zeros(),
            nalgebra::Vector3::new(t[0], t[1], t[2]),
        ),
        Some(t) => bail!("--initial-translation-mm must be three finite numbers, got {t:?}"),
        None => RigidTransform::identity(),
    };
    let deform_fixed = if args.deformable {
        Some(DeformFixed::new(fixed, region.box_mm, DeformOptions::default())?)
    } else {
        None
    };
    let start = Instant::now();
    let r = registrar.register(&context, moving, &initial)?;
    // A rejected rigid answer (a deformed target drags the best rigid fit into spurious
    // rotations) is no start for the field: the initial guess is.
    let deformed = match &deform_fixed {
        Some(df) => {
            let base = if r.verdict.is_accept() {
                r.transform
            } else {
                initial
            };
            Some(DeformableRegistrar::new().register(df, moving, &base, None)?)
        }
        None => None,
    };
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut propagated = None;
    let deformable = match (&deformed, &target_mask) {
        (Some(d), Some(mask)) => {
            let t = d.propagate(mask, moving.grid());
            let report = DeformReport {
                volume_cc: t.volume_cc,
                planned_volume_cc: t.planned_volume_cc,
                volume_change_pct: t.volume_change_pct,
                target_centroid_mm: t.centroid_mm.map(|c| [c.x, c.y, c.z]),
                jacobian_min: d.jacobian_min,
                field_max_mm: d.field_max_mm,
                inverse_error_mm: d.inverse_error_mm,
                deformable_similarity: d.similarity_ncc,
                deformable_iterations: d.iterations,
                deformable_verdict: match d.verdict {
                    DeformVerdict::Accept => "accept".into(),
                    DeformVerdict::Reject(why) => format!("reject: {why:?}"),
                },
            };
            propagated = Some((t, d.verdict));
            Some(report)
        }
        _ => None,
    };

    let m = r.transform.matrix();
    let mut matrix = [0.0; 16];
    for row in 0..4 {
        for col in 0..4 {
            matrix[row * 4 + col] = m[(row, col)];
        }
    }
    let v3 = |v: &nalgebra::Vector3<f64>| [v.x, v.y, v.z];
    let report = Report {
        translation_mm: v3(&r.transform.translation_mm),
        rotation_deg: r.rotation_xyz_deg(),
        rotation_vector_rad: v3(&r.transform.rotation_vector()),
        matrix,
        tumor_shift_mm: v3(&r.tumor_shift_mm),
        target_planned_mm: v3(&r.target_planned_mm.coords),
        iterations: r.iterations,
        converged: r.converged,
        similarity: r.similarity_ncc,
        rms_hu: r.rms_hu,
        overlap_fraction: r.overlap_fraction,
        residual_mm: r.residual_mm.is_finite().then_some(r.residual_mm),
        verdict: match r.verdict {
            Verdict::Accept => "accept".into(),
            Verdict::Reject(why) => format!("reject: {why:?}"),
        },
        elapsed_ms,
        deformable,
    };
    if let (Some(path), Some((target, verdict))) = (&args.write_structures, &propagated) {
        if let DeformVerdict::Reject(why) = verdict {
            bail!("not writing structures from a rejected deformable registration ({why:?})");
        }
        let name = args.roi.clone().unwrap_or_default();
        let roi = StructureRoi::from_mask(1, &name, &target.mask);
        let ss = StructureSet {
            frame_of_reference_uid: moving_series.meta.frame_of_reference_uid.clone(),
            rois: vec![roi],
        };
        let now = chrono::Utc::now();
        let seed = format!(
            "{}|{}|{}",
            moving_series.meta.frame_of_reference_uid,
            now.timestamp_nanos_opt().unwrap_or_default(),
            std::process::id()
        );
        let meta = &moving_series.meta;
        let ct_ids = CtSeriesIds {
            patient_id: meta.patient_id.clone().unwrap_or_default(),
            patient_name: String::new(),
            study_instance_uid: meta
                .study_instance_uid
                .clone()
                .unwrap_or_else(|| uid_2_25(&seed, "study")),
            series_instance_uid: meta
                .series_instance_uid
                .clone()
                .unwrap_or_else(|| uid_2_25(&seed, "ct-series")),
            frame_of_reference_uid: meta.frame_of_reference_uid.clone(),
            series_number: 1,
            acquisition_number: 1,
            temporal_position: None,
            sop_instance_uid_root: uid_2_25(&seed, "ct-root"),
            date: now.format("%Y%m%d").to_string(),
            time: now.format("%H%M%S").to_string(),
            acquired: Acquired::SeriesDateTime,
        };
        let ids = StructureSetIds {
            sop_instance_uid: uid_2_25(&seed, "instance"),
            series_instance_uid: uid_2_25(&seed, "series"),
            series_number: 901,
            label: "PROPAGATED".into(),
        };
        // No slice references: the series reader keeps no per-slice SOP Instance UIDs, and
        // invented ones would point at nothing; the Frame of Reference places the contours.
        let bytes = write_structure_set(&ss, &ct_ids, 0, &ids, &PRODUCER)?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "propagated target written: {} ({} contours, {:.1} cc)",
            path.display(),
            ss.rois[0].contours.len(),
            target.volume_cc
        );
    }
    if let Some(path) = &args.write_setup_registration {
        if let Verdict::Reject(why) = r.verdict {
            bail!("not writing a setup registration from a rejected registration ({why:?})");
        }
        let setup = RoomSetup {
            planning_to_room: r.transform,
            planning_frame_of_reference_uid: fixed_series.meta.frame_of_reference_uid.clone(),
            room_frame_of_reference_uid: moving_series.meta.frame_of_reference_uid.clone(),
        };
        let now = chrono::Utc::now();
        let seed = format!(
            "{}|{}|{}|{}",
            setup.planning_frame_of_reference_uid,
            setup.room_frame_of_reference_uid,
            now.timestamp_nanos_opt().unwrap_or_default(),
            std::process::id()
        );
        let ids = RegistrationIds {
            patient_id: moving_series.meta.patient_id.clone().unwrap_or_default(),
            patient_name: String::new(),
            study_instance_uid: moving_series
                .meta
                .study_instance_uid
                .clone()
                .unwrap_or_else(|| uid_2_25(&seed, "study")),
            series_instance_uid: uid_2_25(&seed, "series"),
            sop_instance_uid: uid_2_25(&seed, "instance"),
            content_date: now.format("%Y%m%d").to_string(),
            content_time: now.format("%H%M%S").to_string(),
        };
        let bytes = write_room_setup_bytes(&setup, &ids)?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "setup registration written: {} (planning {} → room {})",
            path.display(),
            setup.planning_frame_of_reference_uid,
            setup.room_frame_of_reference_uid
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let f = |v: [f64; 3]| format!("{:+.3} {:+.3} {:+.3}", v[0], v[1], v[2]);
        println!("translation_mm  {}", f(report.translation_mm));
        println!("rotation_deg    {} (x-y-z)", f(report.rotation_deg));
        println!("tumor_shift_mm  {}", f(report.tumor_shift_mm));
        println!(
            "iterations {}  converged {}  NCC {:.4}  RMS {:.1} HU  overlap {:.2}",
            report.iterations, report.converged, report.similarity, report.rms_hu, report.overlap_fraction
        );
        if let Some(r) = report.residual_mm {
            println!("residual_mm {r:.2} (largest octant misalignment after the rigid fit)");
        }
        if let Some(d) = &report.deformable {
            println!(
                "deformable: {}  target {:.1} cc ({:+.1}% from plan {:.1} cc)  J min {:.3}  |u| max {:.1} mm  inverse error {:.2} mm  NCC {:.4}",
                d.deformable_verdict,
                d.volume_cc,
                d.volume_change_pct,
                d.planned_volume_cc,
                d.jacobian_min,
                d.field_max_mm,
                d.inverse_error_mm,
                d.deformable_similarity
            );
        }
        println!(
            "verdict {}  ({:.1} ms registration; ingest and ROI preparation excluded)",
            report.verdict, report.elapsed_ms
        );
    }
    Ok(())
}

/// A `2.25.` UID (PS3.5 B.2: an integer under 2¹²⁸) from a digest of `seed` and `label`.
fn uid_2_25(seed: &str, label: &str) -> String {
    let digest = Sha256::digest(format!("{seed}|{label}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format!("2.25.{}", u128::from_be_bytes(bytes))
}
