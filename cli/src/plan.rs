//! `ionguide plan`: the geometric planner on a CT with a target ROI, written as an RT Ion
//! Plan (the plan `ionguide replay` makes when it is given none).

use std::path::PathBuf;

use anyhow::Context;
use ionguide_sim::planning::ct::{plan_ct, CtPlanSummary};
use ionguide_sim::planning::plan_bytes;

use crate::demo::PlannerArgs;

/// Plan a CT for a target ROI.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Planning CT series folder.
    #[arg(long)]
    ct: PathBuf,
    /// RT Structure Set.
    #[arg(long)]
    structures: PathBuf,
    /// Target ROI name.
    #[arg(long)]
    roi: String,
    /// Where to write the RT Ion Plan.
    #[arg(long)]
    out: PathBuf,
    /// Treatment Machine Name written on every beam: the room (facility.toml `machine`) that
    /// is to deliver it.
    #[arg(long)]
    machine: Option<String>,
    #[command(flatten)]
    planner: PlannerArgs,
}

/// Runs `ionguide plan`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let series = ionguide::dicom::ct::read_series_dir(&args.ct)
        .with_context(|| format!("planning CT {}", args.ct.display()))?;
    let structures = ionguide::dicom::rtstruct::read_structure_set(&args.structures)
        .with_context(|| format!("structure set {}", args.structures.display()))?;
    let planned = plan_ct(&series, &structures, &args.roi, &args.planner.options()?)?;
    print_summary(&planned.summary);
    let bytes = match &args.machine {
        Some(m) => ionguide::dicom::rtplan::write_plan_bytes_for_machine(&planned.plan, Some(m))?,
        None => plan_bytes(&planned.plan)?,
    };
    std::fs::write(&args.out, bytes).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", args.out.display());
    Ok(())
}

/// What the planner chose and found, on stderr.
pub fn print_summary(s: &CtPlanSummary) {
    eprintln!(
        "  target {:?}: {:.1} cc, {:.0}% inside the body outline ({}); isocenter ({:.1}, {:.1}, {:.1}) mm, {}",
        s.target_roi,
        s.target_volume_cc,
        100.0 * s.target_inside_body,
        s.body,
        s.isocenter_mm.x,
        s.isocenter_mm.y,
        s.isocenter_mm.z,
        s.patient_position
    );
    eprintln!(
        "  spots every {} mm, layers every {} mm w.e.",
        s.spot_spacing_mm, s.layer_spacing_mm
    );
    for b in &s.beams {
        eprintln!(
            "  gantry {:>5.1}°: {} spots in {} layers, {:.1}–{:.1} MeV/u, {:.1}–{:.1} mm w.e.{}",
            b.gantry_deg,
            b.spots,
            b.layers,
            b.energy_mev_u[0],
            b.energy_mev_u[1],
            b.depth_mm_we[0],
            b.depth_mm_we[1],
            if b.entering_at_ct_edge > 0.0 {
                format!(
                    "; {:.0}% of its rays enter tissue at the CT's edge (depths count from there)",
                    100.0 * b.entering_at_ct_edge
                )
            } else {
                String::new()
            }
        );
    }
}
