//! `ionguide register`: rigid registration of a frame series against a planning CT series;
//! optionally written as the session's setup registration (a DICOM Spatial Registration from
//! the planning CT's Frame of Reference to the frame's).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use ionguide::dicom::spatial_registration::{write_room_setup_bytes, RegistrationIds};
use ionguide::dicom::{ct::read_series_dir, rtstruct::read_roi};
use ionguide::geometry::{RigidTransform, RoomSetup};
use ionguide::register::{BoxMm, FixedContext, RegisterOptions, Registrar, Roi, Verdict, DEFAULT_MARGIN_MM};
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
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
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
    let region = match (&args.structures, &args.roi, &args.box_mm) {
        (Some(rs), Some(name), _) => {
            let (_, roi) =
                read_roi(rs, name).with_context(|| format!("reading ROI {name} from {}", rs.display()))?;
            let raster = roi.rasterize(fixed.grid());
            Roi::from_mask(&raster.mask, args.margin_mm)
                .with_context(|| format!("ROI {name} on the planning CT grid"))?
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
    let start = Instant::now();
    let r = registrar.register(&context, moving, &initial)?;
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;

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
    };
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
