//! `ionguide wepl`: water-equivalent path length through a CT series.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use ionguide::dicom::ct::read_series_dir;
use ionguide::range::raytrace::wepl_between;
use ionguide::range::Hlut;
use ionguide::units::PointMm;
use serde::Serialize;

/// WEPL of a straight segment through a CT series (patient LPS mm).
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

#[derive(Serialize)]
struct Out {
    wepl_mm: f64,
    geometric_mm: f64,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (Some(from), Some(to)) = (args.from, args.to) else {
        bail!("give --from X,Y,Z and --to X,Y,Z (per-spot WEPL from --plan is not built yet)");
    };
    let hlut = match &args.hlut {
        Some(p) => Hlut::from_file(p)?,
        None => Hlut::default(),
    };
    let series = read_series_dir(&args.ct).with_context(|| format!("reading CT {}", args.ct.display()))?;
    let rsp = hlut.convert(&series.volume);
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
