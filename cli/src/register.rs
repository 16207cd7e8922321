//! `ionguide register`: rigid registration of a frame series against a planning CT series.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use ionguide::dicom::{ct::read_series_dir, rtstruct::read_roi};
use ionguide::geometry::RigidTransform;
use ionguide::register::{BoxMm, FixedContext, RegisterOptions, Registrar, Roi, Verdict, DEFAULT_MARGIN_MM};
use ionguide::units::PointMm;
use serde::Serialize;

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
    verdict: String,
    /// Registration only: series ingest and ROI sampling (once per plan) excluded.
    elapsed_ms: f64,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let fixed = read_series_dir(&args.fixed)
        .with_context(|| format!("reading planning CT {}", args.fixed.display()))?
        .volume;
    let moving = read_series_dir(&args.moving)
        .with_context(|| format!("reading frame {}", args.moving.display()))?
        .volume;
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
    let context = FixedContext::new(&fixed, region, &options)?;
    let mut registrar = Registrar::new(options);
    let start = Instant::now();
    let r = registrar.register(&context, &moving, &RigidTransform::identity())?;
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
        verdict: match r.verdict {
            Verdict::Accept => "accept".into(),
            Verdict::Reject(why) => format!("reject: {why:?}"),
        },
        elapsed_ms,
    };
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
        println!(
            "verdict {}  ({:.1} ms registration; ingest and ROI preparation excluded)",
            report.verdict, report.elapsed_ms
        );
    }
    Ok(())
}
