//! `ionguide wepl`: water-equivalent path length through a CT series.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use ionguide::dicom::ct::read_series_dir;
use ionguide::dicom::rtplan::read_plan;
use ionguide::range::raytrace::wepl_between;
use ionguide::range::spots::{SpotTracer, SpotTracerOptions};
use ionguide::range::Hlut;
use ionguide::units::PointMm;
use serde::Serialize;

/// WEPL of a straight segment (`--from`, `--to`) or of every spot of a plan (`--plan`)
/// through a CT series (patient LPS mm).
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// CT series directory.
    #[arg(long)]
    ct: PathBuf,
    /// Segment start `X,Y,Z` in patient mm (write `--from=-2000,0,0` for negative values).
    #[arg(long, value_parser = parse_point, allow_hyphen_values = true)]
    from: Option<PointMm>,
    /// Segment end `X,Y,Z` in patient mm.
    #[arg(long, value_parser = parse_point, allow_hyphen_values = true)]
    to: Option<PointMm>,
    /// RT Ion Plan: per-spot planned depth and WEPL to its target point (CSV, or JSON).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    plan: Option<PathBuf>,
    /// Room virtual source-axis distances `X,Y` in mm for beams whose plan gives none
    /// (default: parallel beam).
    #[arg(long, value_parser = parse_pair)]
    sad_mm: Option<[f64; 2]>,
    /// HU → RSP table (CSV `hu,rsp` or TOML `[[point]]`); default matRad's generic table.
    #[arg(long)]
    hlut: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_point(s: &str) -> Result<PointMm, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|c| c.trim().parse::<f64>().map_err(|e| format!("{c:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [x, y, z] if v.iter().all(|c| c.is_finite()) => Ok(PointMm::new(*x, *y, *z)),
        _ => Err(format!("expected three finite numbers X,Y,Z, got {s:?}")),
    }
}

fn parse_pair(s: &str) -> Result<[f64; 2], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|c| c.trim().parse::<f64>().map_err(|e| format!("{c:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [x, y] if *x > 0.0 && *y > 0.0 => Ok([*x, *y]),
        _ => Err(format!("expected two positive numbers X,Y, got {s:?}")),
    }
}

#[derive(Serialize)]
struct SpotOut {
    beam: i32,
    layer: usize,
    spot: usize,
    energy_mev_u: f64,
    planned_depth_mm: f64,
    /// WEPL from the ray start to the target point; to the CT exit when not reached.
    wepl_mm: f64,
    reached: bool,
    target_x_mm: Option<f64>,
    target_y_mm: Option<f64>,
    target_z_mm: Option<f64>,
}

#[derive(Serialize)]
struct Out {
    wepl_mm: f64,
    geometric_mm: f64,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let hlut = match &args.hlut {
        Some(p) => Hlut::from_file(p)?,
        None => Hlut::default(),
    };
    let series = read_series_dir(&args.ct).with_context(|| format!("reading CT {}", args.ct.display()))?;
    let rsp = hlut.convert(&series.volume);
    if let Some(plan_path) = &args.plan {
        let (plan, _warnings) =
            read_plan(plan_path).with_context(|| format!("reading plan {}", plan_path.display()))?;
        let options = SpotTracerOptions::new(args.sad_mm.unwrap_or([f64::INFINITY; 2]));
        let mut tracer = SpotTracer::new(&plan, &options)?;
        tracer.trace_frame(&rsp);
        let rows: Vec<SpotOut> = tracer
            .spots()
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let target = tracer.target_point_mm(n);
                let total = tracer.profile(s.ray).map_or(0.0, |p| p.total_wepl_mm());
                SpotOut {
                    beam: plan.beams[s.beam].number,
                    layer: s.layer,
                    spot: s.spot,
                    energy_mev_u: s.energy_mev_u,
                    planned_depth_mm: s.planned_depth.get(),
                    wepl_mm: if target.is_some() {
                        s.planned_depth.get()
                    } else {
                        total
                    },
                    reached: target.is_some(),
                    target_x_mm: target.map(|p| p.x),
                    target_y_mm: target.map(|p| p.y),
                    target_z_mm: target.map(|p| p.z),
                }
            })
            .collect();
        if args.json {
            println!("{}", serde_json::to_string(&rows)?);
        } else {
            let mut w = csv::Writer::from_writer(std::io::stdout());
            for r in &rows {
                w.serialize(r)?;
            }
            w.flush()?;
        }
        return Ok(());
    }
    let (Some(from), Some(to)) = (args.from, args.to) else {
        bail!("give --from X,Y,Z and --to X,Y,Z, or --plan FILE");
    };
    let w = wepl_between(&rsp, &from, &to);
    let out = Out {
        wepl_mm: w.wepl_mm,
        geometric_mm: w.geometric_mm,
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "WEPL {:.3} mm over {:.3} mm inside the CT",
            out.wepl_mm, out.geometric_mm
        );
    }
    Ok(())
}
