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
use ionguide::dose::{compute_dose, dose_grid_like, DoseOptions, IonMachine, SpotWeightUnit};
use ionguide::geometry::Grid;
use ionguide::range::Hlut;
use ionguide::units::Ion;
use ionguide::volume::Volume;
use serde::Serialize;
use sha2::{Digest, Sha256};

const PRODUCER: Producer = Producer {
    manufacturer: "ionguide",
    implementation_class_uid: "2.25.216143920517462233091582931405728375129",
    implementation_version_name: "IONGUIDE_0.1",
};

/// Compute a plan's physical dose on a CT with the pencil-beam kernel (matRad's HongPB),
/// write it as DICOM RT Dose, and with --structures report each ROI's D98, D95, D50, D2,
/// mean dose and V95.
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
    /// Particles per monitor unit: the plan's spot weights are MU. Without it they count
    /// particles.
    #[arg(long)]
    particles_per_mu: Option<f64>,
    /// Prescription dose, Gy: V95 is relative to it. Without it, relative to the target
    /// ROI's D50 (the output says which).
    #[arg(long)]
    prescription_gy: Option<f64>,
    /// Target ROI for V95 without a prescription; default the first ROI named PTV*, else
    /// CTV*, else GTV*.
    #[arg(long)]
    target: Option<String>,
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

/// Dose received by at least `percent` % of the voxels (`sorted` descending).
fn d_at(sorted_desc: &[f32], percent: f64) -> f64 {
    let n = sorted_desc.len();
    let idx = ((percent / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1;
    f64::from(sorted_desc[idx])
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
    let (plan, _warnings) =
        read_plan(&args.plan).with_context(|| format!("reading plan {}", args.plan.display()))?;
    let mut ions: Vec<Ion> = plan.beams.iter().map(|b| b.ion).collect();
    ions.dedup();
    let machines = load_machines(&args.machine_dirs, &ions)?;
    let mut options = DoseOptions::new([f64::INFINITY; 2])
        .with_threads(args.threads.max(1))
        .with_energy_tolerance_mev_u(args.energy_tolerance_mev_u);
    if let Some(p) = args.particles_per_mu {
        options = options.with_weight_unit(SpotWeightUnit::MonitorUnits { particles_per_mu: p });
    }
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

    let (rois, reference) = match &args.structures {
        Some(p) => {
            let set = read_structure_set(p).with_context(|| format!("reading structures {}", p.display()))?;
            roi_figures(
                &set.rois,
                series.volume.grid(),
                &dose,
                args.prescription_gy,
                args.target.as_deref(),
            )?
        }
        None => (Vec::new(), None),
    };
    let max_gy = dose.as_slice().iter().copied().fold(0.0f32, f32::max);
    let out = Out {
        rt_dose: args.out.display().to_string(),
        dims: grid.dims(),
        spacing_mm: grid.spacing_mm(),
        max_gy: f64::from(max_gy),
        seconds: start.elapsed().as_secs_f64(),
        v95_reference_gy: reference.as_ref().map(|r| r.0),
        v95_reference: reference.map(|r| r.1),
        rois,
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_table(&out);
    }
    Ok(())
}

type Reference = Option<(f64, String)>;

/// Dose–volume figures of every ROI (CT voxels inside it, dose interpolated there; an ROI
/// with no voxel is left out), and V95's reference.
fn roi_figures(
    rois: &[ionguide::structure::Roi],
    ct_grid: &Grid,
    dose: &Volume<f32>,
    prescription_gy: Option<f64>,
    target: Option<&str>,
) -> anyhow::Result<(Vec<RoiOut>, Reference)> {
    let mut sorted: Vec<(String, usize, f64, Vec<f32>)> = Vec::new();
    for roi in rois {
        // On the CT grid, where the contours lie on slice planes (a coarser dose grid's
        // planes generally miss them), with the dose interpolated at each voxel centre.
        let m = roi.rasterize(ct_grid);
        let [nx, ny, _] = ct_grid.dims();
        let dims = dose.grid().dims();
        let mut v: Vec<f32> = m
            .mask
            .as_slice()
            .iter()
            .enumerate()
            .filter(|(_, m)| **m != 0)
            .map(|(n, _)| {
                let ijk = [(n % nx) as f64, ((n / nx) % ny) as f64, (n / (nx * ny)) as f64];
                // Clamped: CT voxels in the dose grid's outer half voxel take its edge value.
                let mut d = dose.grid().patient_to_index(&ct_grid.index_to_patient(ijk));
                for (a, x) in d.iter_mut().enumerate() {
                    *x = x.clamp(0.0, (dims[a] - 1) as f64);
                }
                dose.sample_index_linear(d).unwrap_or(0.0)
            })
            .collect();
        v.sort_by(|a, b| b.total_cmp(a));
        sorted.push((roi.name.clone(), m.voxels, m.volume_cc, v));
    }
    let reference = match prescription_gy {
        Some(p) if p.is_finite() && p > 0.0 => Some((p, "prescription".to_string())),
        Some(p) => bail!("--prescription-gy must be finite and > 0, got {p}"),
        None => {
            let pick = match target {
                Some(t) => match sorted.iter().find(|r| r.0 == t) {
                    Some(r) => Some(r),
                    None => bail!("--target {t:?} is not an ROI of the structure set"),
                },
                None => ["PTV", "CTV", "GTV"]
                    .iter()
                    .find_map(|p| sorted.iter().find(|r| r.0.to_uppercase().starts_with(p))),
            };
            pick.filter(|r| !r.3.is_empty())
                .map(|r| (d_at(&r.3, 50.0), format!("D50 of {}", r.0)))
        }
    };
    let out = sorted
        .into_iter()
        .filter(|r| !r.3.is_empty())
        .map(|(name, voxels, volume_cc, v)| {
            let mean = v.iter().map(|d| f64::from(*d)).sum::<f64>() / v.len() as f64;
            let v95 = reference.as_ref().map(|(r, _)| {
                100.0 * v.iter().filter(|d| f64::from(**d) >= 0.95 * r).count() as f64 / v.len() as f64
            });
            RoiOut {
                name,
                voxels,
                volume_cc,
                d98_gy: d_at(&v, 98.0),
                d95_gy: d_at(&v, 95.0),
                d50_gy: d_at(&v, 50.0),
                d2_gy: d_at(&v, 2.0),
                mean_gy: mean,
                v95_percent: v95,
            }
        })
        .collect();
    Ok((out, reference))
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
        (Some(g), Some(s)) => println!("V95: ≥ 95 % of {g:.4} Gy ({s})"),
        _ => println!("V95: no prescription and no target ROI"),
    }
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "ROI", "cc", "D98 Gy", "D95 Gy", "D50 Gy", "D2 Gy", "mean Gy", "V95 %"
    );
    for r in &out.rois {
        println!(
            "{:<20} {:>9.2} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>7}",
            r.name,
            r.volume_cc,
            r.d98_gy,
            r.d95_gy,
            r.d50_gy,
            r.d2_gy,
            r.mean_gy,
            r.v95_percent.map_or("-".to_string(), |v| format!("{v:.1}"))
        );
    }
}
