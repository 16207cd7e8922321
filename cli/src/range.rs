//! `ionguide range`: CSDA range in water ↔ energy per nucleon.

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use ionguide::range::RangeEnergyTable;
use ionguide::units::{Ion, MmWe};
use serde::Serialize;

/// Convert energy per nucleon to CSDA range in water, or back.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Ion: 1H (p), 4He, 12C, 16O, 20Ne.
    #[arg(long)]
    ion: Ion,
    /// Kinetic energy per nucleon, MeV/u.
    #[arg(long, conflicts_with = "range_mm")]
    energy_mev_u: Option<f64>,
    /// CSDA range in water, mm.
    #[arg(long)]
    range_mm: Option<f64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Out {
    ion: String,
    energy_mev_u: f64,
    range_mm: f64,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let table = RangeEnergyTable::new(args.ion).context("range–energy table")?;
    let out = match (args.energy_mev_u, args.range_mm) {
        (Some(e), None) => Out {
            ion: args.ion.to_string(),
            energy_mev_u: e,
            range_mm: table.range_mm(e)?.get(),
        },
        (None, Some(r)) => Out {
            ion: args.ion.to_string(),
            energy_mev_u: table.energy_mev_u(MmWe(r))?,
            range_mm: r,
        },
        _ => bail!("give exactly one of --energy-mev-u or --range-mm"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{}: {:.3} MeV/u ↔ CSDA range {:.3} mm in water",
            out.ion, out.energy_mev_u, out.range_mm
        );
    }
    Ok(())
}
