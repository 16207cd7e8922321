//! `ionguide dose`: a plan's physical dose on a CT (the pencil-beam kernel), written as RT
//! Dose, with dose–volume figures per ROI of a structure set.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use ionguide::dicom::ct::read_series_dir;
use ionguide::dicom::identity::read_identity;
use ionguide::dicom::rtdose::{write_rt_dose, RtDoseIds};
use ionguide::dicom::rtplan::read_plan;
use ionguide::dicom::rtstruct::read_structure_set;
use ionguide::dicom::write::Producer;
use ionguide::dose::evaluate::{cumulative_dvh, sample_roi, volume_above_outside_cc, Dvh, RoiDoses};
use ionguide::dose::{compute_dose, dose_grid_like, DoseOptions, IonMachine};
use ionguide::geometry::Grid;
use ionguide::plan::{DosimeterUnit, IonPlan};
use ionguide::range::Hlut;
use ionguide::units::Ion;
use ionguide::volume::{MaskVolume, Volume};
use serde::Serialize;
use sha2::{Digest, Sha256};

const PRODUCER: Producer = Producer {
    manufacturer: "ionguide",
    implementation_class_uid: "2.25.216143920517462233091582931405728375129",
    implementation_version_name: "IONGUIDE_0.1",
};

/// Compute a plan's physical dose on a CT with the pencil-beam kernel (matRad's HongPB),
/// write it as DICOM RT Dose, and with --structures report each ROI's D98, D95, D50, D2,
/// mean dose, V95, homogeneity index and cumulative DVH (--dvh-svg draws them), and the
/// volume outside the target at ≥ 50 % of the prescription.
///
/// Each beam's Primary Dosimeter Unit says what its spot weights count: NP particles, MU
/// monitor units (then --particles-per-mu is required); a beam without one counts
/// particles, with a warning.
///
/// Machine data is never looked up next to the executable: give one --machine-dir per ion of
/// the plan (a folder in matRad's exported layout, e.g. tests/data/matrad/carbon_Generic of the
/// source tree). 20Ne is derived from a 16O folder. Output bytes are the same run to run.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// CT series directory.
    #[arg(long)]
    ct: PathBuf,
    /// RT Ion Plan.
    #[arg(long)]
    plan: PathBuf,
    /// RT Structure Set: dose–volume figures per ROI.
    #[arg(long)]
    structures: Option<PathBuf>,
    /// Where to write the RT Dose.
    #[arg(long, default_value = "RD.dcm")]
    out: PathBuf,
    /// Dose grid spacing, mm (all three axes; the grid covers the CT with its orientation).
    #[arg(long, default_value_t = 3.0)]
    grid_mm: f64,
    /// Machine data folder (energies.csv, depth_dose.csv[.gz], machine.txt), one per ion;
    /// repeat for several ions. Required: no data is built in.
    #[arg(long = "machine-dir", required = true)]
    machine_dirs: Vec<PathBuf>,
    /// Particles per monitor unit, for the beams whose Primary Dosimeter Unit is MU
    /// (required when the plan has one).
    #[arg(long)]
    particles_per_mu: Option<f64>,
    /// Prescription dose, Gy: V95 is relative to it. Without it, relative to the target
    /// ROI's D50 (the output says which).
    #[arg(long)]
    prescription_gy: Option<f64>,
    /// Target ROI for V95 without a prescription and for the volume outside it; default
    /// the first ROI named PTV*, else CTV*, else GTV*.
    #[arg(long)]
    target: Option<String>,
    /// Body (external) ROI: the volume outside the target is counted inside it. Default the
    /// first ROI named BODY* or EXTERNAL*; without one, the whole CT.
    #[arg(long)]
    body: Option<String>,
    /// Draw every ROI's cumulative DVH to this SVG file (needs --structures).
    #[arg(long)]
    dvh_svg: Option<PathBuf>,
    /// How far a layer energy may be from the machine's nearest tabulated one, MeV/u (that
    /// one is then used: energies are never interpolated, so a wide tolerance shifts ranges).
    #[arg(long, default_value_t = 0.01)]
    energy_tolerance_mev_u: f64,
    /// HU → RSP table (CSV `hu,rsp` or TOML `[[point]]`); default matRad's generic table.
    #[arg(long)]
    hlut: Option<PathBuf>,
    /// Threads the dose rays are split over.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct RoiOut {
    name: String,
    voxels: usize,
    volume_cc: f64,
    d98_gy: f64,
    d95_gy: f64,
    d50_gy: f64,
    d2_gy: f64,
    mean_gy: f64,
    /// Percent of the ROI at ≥ 95 % of `v95_reference_gy`; `None` without a reference.
    v95_percent: Option<f64>,
    /// ICRU 83: (D2 − D98) / D50; `None` when D50 is 0.
    homogeneity_index: Option<f64>,
    /// Cumulative DVH: `volume_percent[i]` of the ROI at ≥ `i · bin_gy`.
    dvh: Dvh,
}

#[derive(Serialize)]
struct Out {
    rt_dose: String,
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    max_gy: f64,
    seconds: f64,
    /// The dose V95 is relative to, Gy.
    v95_reference_gy: Option<f64>,
    /// `prescription` or `D50 of <ROI>`.
    v95_reference: Option<String>,
    /// Volume outside the target (inside the body ROI if there is one) at ≥ 50 % of
    /// `v95_reference_gy`, cm³.
    v50_outside_cc: Option<f64>,
    /// Which target and body `v50_outside_cc` was counted against.
    v50_outside: Option<String>,
    rois: Vec<RoiOut>,
}

/// `2.25.` and the decimal of the first 16 bytes of SHA-256 over `parts`: a UID fixed by
/// its inputs, so reruns write the same bytes.
fn derived_uid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    format!("2.25.{}", u128::from_be_bytes(b))
}

fn load_machines(dirs: &[PathBuf], plan_ions: &[Ion]) -> anyhow::Result<Vec<IonMachine>> {
    let mut machines = Vec::new();
    for d in dirs {
        let m = IonMachine::from_dir(d).with_context(|| format!("machine data {}", d.display()))?;
        machines.push(m);
    }
    if plan_ions.contains(&Ion::NEON20) && !machines.iter().any(|m| m.ion == Ion::NEON20) {
        if let Some(o) = machines.iter().find(|m| m.ion == Ion::OXYGEN16) {
            let ne = IonMachine::neon_from_oxygen(o)?;
            machines.push(ne);
        }
    }
    for ion in plan_ions {
        if !machines.iter().any(|m| m.ion == *ion) {
            bail!(
                "the plan has {ion} beams but no --machine-dir has {ion} data (e.g. tests/data/matrad/*_Generic; 20Ne comes from 16O)"
            );
        }
    }
    Ok(machines)
}

/// Runs `f`, saying on stderr what is going on if it takes over a second.
fn with_progress<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (tx, rx) = mpsc::channel::<()>();
    let what = what.to_string();
    let watcher = std::thread::spawn(move || {
        let start = Instant::now();
        if rx.recv_timeout(Duration::from_secs(1)).is_err() {
            eprintln!("{what}…");
            let _ = rx.recv();
            eprintln!("{what}: done in {:.1} s", start.elapsed().as_secs_f64());
        }
    });
    let out = f();
    let _ = tx.send(());
    let _ = watcher.join();
    out
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let hlut = match &args.hlut {
        Some(p) => Hlut::from_file(p)?,
        None => Hlut::default(),
    };
    let series = read_series_dir(&args.ct).with_context(|| format!("reading CT {}", args.ct.display()))?;
    // The reader logs its warnings (an unknown Primary Dosimeter Unit among them).
    let (plan, _warnings) =
        read_plan(&args.plan).with_context(|| format!("reading plan {}", args.plan.display()))?;
    let plan = weights_as_particles(&plan, args.particles_per_mu)?;
    let mut ions: Vec<Ion> = plan.beams.iter().map(|b| b.ion).collect();
    ions.dedup();
    let machines = load_machines(&args.machine_dirs, &ions)?;
    let options = DoseOptions::new([f64::INFINITY; 2])
        .with_threads(args.threads.max(1))
        .with_energy_tolerance_mev_u(args.energy_tolerance_mev_u);
    let grid = dose_grid_like(series.volume.grid(), [args.grid_mm; 3])?;
    let dose = with_progress(&format!("computing dose on {:?} voxels", grid.dims()), || {
        compute_dose(&plan, &series.volume, &hlut, &machines, &grid, &options)
    })?;

    let meta = &series.meta;
    let study = meta
        .study_instance_uid
        .clone()
        .unwrap_or_else(|| derived_uid(&["study", &meta.frame_of_reference_uid]));
    let key = format!("{:?}|{}", grid.dims(), args.grid_mm);
    let ids = RtDoseIds {
        patient_id: meta.patient_id.clone().unwrap_or_default(),
        // The series reader keeps no name; the first slice has it (empty if unreadable).
        patient_name: meta
            .files
            .first()
            .and_then(|f| read_identity(f).ok())
            .and_then(|i| i.patient_name)
            .unwrap_or_default(),
        study_instance_uid: study,
        frame_of_reference_uid: meta.frame_of_reference_uid.clone(),
        series_instance_uid: derived_uid(&["rtdose-series", &plan.sop_instance_uid, &key]),
        sop_instance_uid: derived_uid(&["rtdose", &plan.sop_instance_uid, &key]),
        referenced_plan_sop_instance_uid: plan.sop_instance_uid.trim().to_string(),
        series_number: 900,
        date: meta.content_date.clone().unwrap_or_default(),
        time: meta.content_time.clone().unwrap_or_default(),
    };
    let bytes = write_rt_dose(&dose, &ids, &PRODUCER).context("writing RT Dose")?;
    std::fs::write(&args.out, bytes).with_context(|| format!("writing {}", args.out.display()))?;

    let max_gy = dose.as_slice().iter().copied().fold(0.0f32, f32::max);
    let figures = match &args.structures {
        Some(p) => {
            let set = read_structure_set(p).with_context(|| format!("reading structures {}", p.display()))?;
            roi_figures(
                &set.rois,
                series.volume.grid(),
                &dose,
                f64::from(max_gy),
                &Picks {
                    prescription_gy: args.prescription_gy,
                    target: args.target.as_deref(),
                    body: args.body.as_deref(),
                },
            )?
        }
        None => Figures::default(),
    };
    if let Some(svg) = &args.dvh_svg {
        if args.structures.is_none() {
            bail!("--dvh-svg needs --structures (the DVHs are per ROI)");
        }
        plot_dvh(svg, &figures.rois, args.prescription_gy)
            .map_err(|e| anyhow::anyhow!("writing the DVH plot {}: {e}", svg.display()))?;
    }
    let reference = figures.reference;
    let out = Out {
        rt_dose: args.out.display().to_string(),
        dims: grid.dims(),
        spacing_mm: grid.spacing_mm(),
        max_gy: f64::from(max_gy),
        seconds: start.elapsed().as_secs_f64(),
        v95_reference_gy: reference.as_ref().map(|r| r.0),
        v95_reference: reference.map(|r| r.1),
        v50_outside_cc: figures.v50_outside.as_ref().map(|v| v.0),
        v50_outside: figures.v50_outside.map(|v| v.1),
        rois: figures.rois,
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_table(&out);
    }
    Ok(())
}

type Reference = Option<(f64, String)>;

/// Each MU beam's weights times `particles_per_mu`, so every weight counts particles. An
/// MU beam without the calibration is an error naming the beam and the flag; a beam
/// without a unit counts particles, with a warning.
fn weights_as_particles(plan: &IonPlan, particles_per_mu: Option<f64>) -> anyhow::Result<IonPlan> {
    if let Some(p) = particles_per_mu {
        if !(p.is_finite() && p > 0.0) {
            bail!("--particles-per-mu must be finite and > 0, got {p}");
        }
    }
    let mut out = plan.clone();
    let mut used = false;
    for b in &mut out.beams {
        match b.primary_dosimeter_unit {
            Some(DosimeterUnit::Particles) => {}
            Some(DosimeterUnit::MonitorUnits) => {
                let Some(p) = particles_per_mu else {
                    bail!(
                        "beam {:?} (number {}) has Primary Dosimeter Unit MU: its spot weights are monitor units; give the beam line's calibration with --particles-per-mu",
                        b.name,
                        b.number
                    );
                };
                used = true;
                for s in b.layers.iter_mut().flat_map(|l| l.spots.iter_mut()) {
                    s.weight *= p;
                }
                b.primary_dosimeter_unit = Some(DosimeterUnit::Particles);
            }
            None => eprintln!(
                "warning: beam {:?} (number {}) states no Primary Dosimeter Unit (NP or MU); its spot weights are counted as particles",
                b.name, b.number
            ),
        }
    }
    if particles_per_mu.is_some() && !used {
        eprintln!("warning: --particles-per-mu ignored: no beam of the plan is in MU");
    }
    Ok(out)
}

/// Which ROIs and dose the figures are relative to.
struct Picks<'a> {
    prescription_gy: Option<f64>,
    target: Option<&'a str>,
    body: Option<&'a str>,
}

#[derive(Default)]
struct Figures {
    rois: Vec<RoiOut>,
    reference: Reference,
    /// `(cm³, what it was counted against)`.
    v50_outside: Option<(f64, String)>,
}

/// The first ROI whose upper-case name starts with one of `prefixes`, in that order.
fn by_prefix<'a>(names: impl Iterator<Item = &'a str> + Clone, prefixes: &[&str]) -> Option<&'a str> {
    prefixes
        .iter()
        .find_map(|p| names.clone().find(|n| n.to_uppercase().starts_with(p)))
}

/// Dose–volume figures of every ROI (CT voxels inside it, dose interpolated there; an ROI
/// with no voxel is left out), V95's reference, and the volume outside the target at
/// ≥ 50 % of it.
fn roi_figures(
    rois: &[ionguide::structure::Roi],
    ct_grid: &Grid,
    dose: &Volume<f32>,
    max_gy: f64,
    picks: &Picks,
) -> anyhow::Result<Figures> {
    let names = rois.iter().map(|r| r.name.as_str());
    let target = match picks.target {
        Some(t) if names.clone().any(|n| n == t) => Some(t),
        Some(t) => bail!("--target {t:?} is not an ROI of the structure set"),
        None => by_prefix(names.clone(), &["PTV", "CTV", "GTV"]),
    };
    let body = match picks.body {
        Some(b) if names.clone().any(|n| n == b) => Some(b),
        Some(b) => bail!("--body {b:?} is not an ROI of the structure set"),
        None => by_prefix(names.clone(), &["BODY", "EXTERNAL"]),
    };
    // On the CT grid, where the contours lie on slice planes (a coarser dose grid's
    // planes generally miss them), with the dose interpolated at each voxel centre. Only
    // the target's and the body's masks are kept (one byte per CT voxel each).
    let mut sampled: Vec<RoiDoses> = Vec::new();
    let mut target_mask: Option<MaskVolume> = None;
    let mut body_mask: Option<MaskVolume> = None;
    for roi in rois {
        let (doses, mask) = sample_roi(roi, ct_grid, dose);
        if Some(roi.name.as_str()) == target && target_mask.is_none() {
            target_mask = Some(mask.mask);
        } else if Some(roi.name.as_str()) == body && body_mask.is_none() {
            body_mask = Some(mask.mask);
        }
        sampled.push(doses);
    }
    let reference = match picks.prescription_gy {
        Some(p) if p.is_finite() && p > 0.0 => Some((p, "prescription".to_string())),
        Some(p) => bail!("--prescription-gy must be finite and > 0, got {p}"),
        None => target
            .and_then(|t| sampled.iter().find(|r| r.name == t))
            .and_then(|r| r.stats(None).map(|s| (s.d50_gy, format!("D50 of {}", r.name)))),
    };
    let v50_outside = match (&target_mask, &reference) {
        (Some(t), Some((r, what))) => {
            let cc = volume_above_outside_cc(dose, t, body_mask.as_ref(), 0.5 * r)?;
            let inside = body.map_or("the whole CT".to_string(), |b| format!("inside {b}"));
            Some((
                cc,
                format!(
                    "outside {}, {inside}, at ≥ 50 % of {} Gy ({what})",
                    target.unwrap_or(""),
                    gy(*r)
                ),
            ))
        }
        _ => None,
    };
    // One bin width for every ROI, so the curves share an axis: 200 bins up to the
    // maximum, one more past it (0 %).
    let (bin_gy, bins) = if max_gy > 0.0 {
        (max_gy / 200.0, 202)
    } else {
        (1e-3, 2)
    };
    let mut out = Vec::new();
    for r in sampled {
        let Some(s) = r.stats(reference.as_ref().map(|x| x.0)) else {
            continue;
        };
        out.push(RoiOut {
            dvh: cumulative_dvh(&r.doses_desc_gy, bin_gy, bins)?,
            name: r.name,
            voxels: r.voxels,
            volume_cc: r.volume_cc,
            d98_gy: s.d98_gy,
            d95_gy: s.d95_gy,
            d50_gy: s.d50_gy,
            d2_gy: s.d2_gy,
            mean_gy: s.mean_gy,
            v95_percent: s.v95_percent,
            homogeneity_index: s.homogeneity_index,
        });
    }
    Ok(Figures {
        rois: out,
        reference,
        v50_outside,
    })
}

/// Every ROI's cumulative DVH, one colour each, the legend in a strip of its own to the
/// right of the plot so it never covers a curve; the prescription as a dashed line.
fn plot_dvh(
    path: &std::path::Path,
    rois: &[RoiOut],
    prescription_gy: Option<f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let x_max = rois
        .iter()
        .flat_map(|r| r.dvh.points().filter(|p| p.1 > 0.0).map(|p| p.0 + r.dvh.bin_gy))
        .chain(prescription_gy)
        .fold(0.0f64, f64::max);
    // An all-zero dose still gets an axis.
    let x_max = if x_max > 0.0 { 1.08 * x_max } else { 1.0 };
    let longest = rois.iter().map(|r| r.name.chars().count()).max().unwrap_or(4);
    let legend_w = (longest as u32 * 8 + 60).clamp(140, 320);
    let root = SVGBackend::new(path, (760 + legend_w, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot_area, legend_area) = root.split_horizontally(760);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption("Cumulative dose–volume histograms", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..105.0)?;
    chart
        .configure_mesh()
        .x_desc("Dose (Gy)")
        .y_desc("Volume (%)")
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    let colour = |i: usize| Palette99::pick(i).to_rgba();
    for (i, r) in rois.iter().enumerate() {
        chart.draw_series(LineSeries::new(r.dvh.points(), colour(i).stroke_width(2)))?;
    }
    if let Some(p) = prescription_gy {
        chart.draw_series(DashedLineSeries::new(
            [(p, 0.0), (p, 105.0)],
            6,
            4,
            BLACK.stroke_width(1),
        ))?;
        // Left of the line, so it stays inside the plot whatever the dose axis.
        let style = ("sans-serif", 13).into_font().into_text_style(&plot_area).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Right,
                plotters::style::text_anchor::VPos::Top,
            ),
        );
        chart.draw_series(std::iter::once(Text::new(
            format!("prescription {p} Gy "),
            (p, 104.0),
            style,
        )))?;
    }
    legend_area.draw(&Text::new("ROI", (10, 40), ("sans-serif", 15).into_font()))?;
    for (i, r) in rois.iter().enumerate() {
        let y = 66 + 22 * i as i32;
        legend_area.draw(&PathElement::new(
            vec![(10, y), (40, y)],
            colour(i).stroke_width(3),
        ))?;
        legend_area.draw(&Text::new(
            r.name.clone(),
            (48, y - 7),
            ("sans-serif", 14).into_font(),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// A dose for people: four decimals, or four significant digits below 0.01 Gy (a plan of
/// unit weights gives micrograys).
fn gy(d: f64) -> String {
    if d == 0.0 || d.abs() >= 0.01 {
        format!("{d:.4}")
    } else {
        format!("{d:.3e}")
    }
}

fn print_table(out: &Out) {
    println!(
        "RT Dose {} ({}×{}×{} voxels of {} mm), max {:.4} Gy, {:.1} s",
        out.rt_dose, out.dims[0], out.dims[1], out.dims[2], out.spacing_mm[0], out.max_gy, out.seconds
    );
    if out.rois.is_empty() {
        return;
    }
    match (&out.v95_reference_gy, &out.v95_reference) {
        (Some(g), Some(s)) => println!("V95: ≥ 95 % of {} Gy ({s})", gy(*g)),
        _ => println!("V95: no prescription and no target ROI"),
    }
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "ROI", "cc", "D98 Gy", "D95 Gy", "D50 Gy", "D2 Gy", "mean Gy", "V95 %", "HI"
    );
    for r in &out.rois {
        println!(
            "{:<20} {:>9.2} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>7} {:>7}",
            r.name,
            r.volume_cc,
            r.d98_gy,
            r.d95_gy,
            r.d50_gy,
            r.d2_gy,
            r.mean_gy,
            r.v95_percent.map_or("-".to_string(), |v| format!("{v:.1}")),
            r.homogeneity_index.map_or("-".to_string(), |v| format!("{v:.3}"))
        );
    }
    if let (Some(cc), Some(what)) = (out.v50_outside_cc, &out.v50_outside) {
        println!("V50 outside the target: {cc:.2} cc ({what})");
    }
}
