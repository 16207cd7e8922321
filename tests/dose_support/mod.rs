//! matRad's pencil-beam formula evaluated independently from the machine CSVs in
//! `tests/data/matrad` (formula from that folder's README and pyRadPlan's `_hongpb.py`), a
//! water phantom and one-spot plans: the truth the dose tests (`dose_matrad`,
//! `dose_delivered`) compare the engine with.

#![allow(dead_code)]

use std::io::Read;
use std::path::Path;

use ionguide::dose::{compute_dose, DoseOptions, IonMachine};
use ionguide::geometry::Grid;
use ionguide::plan::{EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::Hlut;
use ionguide::units::{Ion, PointMm};
use ionguide::volume::{CtVolume, Volume};

pub const DATA: &str = "tests/data/matrad";

// ---- the formula, from the CSV, written here --------------------------------------------

/// One energy's columns as read straight from the files.
pub struct Columns {
    pub sigma_initial_mm: f64,
    pub depth: Vec<f64>,
    pub idd: Vec<f64>,
    /// Per Gaussian component: sigma in water at each depth.
    pub sigma: Vec<Vec<f64>>,
    /// Per Gaussian component: weight at each depth (the first is 1 − the others).
    pub weight: Vec<Vec<f64>>,
}

pub fn read(folder: &str, name: &str) -> String {
    let dir = Path::new(DATA).join(folder);
    let plain = dir.join(name);
    if plain.exists() {
        return std::fs::read_to_string(plain).unwrap();
    }
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(dir.join(format!("{name}.gz"))).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    s
}

pub fn columns(folder: &str, energy: &str) -> Columns {
    let e = read(folder, "energies.csv");
    let row: Vec<&str> = e
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|c| c[0] == energy)
        .expect("energy in energies.csv");
    let sigma_initial_mm: f64 = row[3].parse().unwrap();
    let d = read(folder, "depth_dose.csv");
    let mut lines = d.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (sig_cols, w_cols): (Vec<usize>, Vec<usize>) = match folder {
        "carbon_Generic" => (vec![col("sigma_mm")], vec![]),
        "protons_Generic" | "helium_Generic" => {
            (vec![col("sigma1_mm"), col("sigma2_mm")], vec![col("weight2")])
        }
        "oxygen_Generic" => (
            vec![
                col("sigma_multi1_mm"),
                col("sigma_multi2_mm"),
                col("sigma_multi3_mm"),
            ],
            vec![col("weight_multi1"), col("weight_multi2")],
        ),
        _ => unreachable!(),
    };
    let mut c = Columns {
        sigma_initial_mm,
        depth: vec![],
        idd: vec![],
        sigma: vec![vec![]; sig_cols.len()],
        weight: vec![vec![]; sig_cols.len()],
    };
    for line in lines {
        let v: Vec<&str> = line.split(',').collect();
        if v[0] != energy {
            continue;
        }
        let f = |i: usize| v[i].parse::<f64>().unwrap();
        c.depth.push(f(col("depth_mm")));
        c.idd.push(f(col("idd_mev_cm2_per_g_per_ion")));
        for (n, &sc) in sig_cols.iter().enumerate() {
            c.sigma[n].push(f(sc));
        }
        let others: Vec<f64> = w_cols.iter().map(|&wc| f(wc)).collect();
        c.weight[0].push(1.0 - others.iter().sum::<f64>());
        for (n, w) in others.into_iter().enumerate() {
            c.weight[n + 1].push(w);
        }
    }
    assert!(c.depth.len() > 10, "{folder} {energy}: rows");
    c
}

/// matRad's HongPB dose per ion, Gy, at water depth `d` (mm) and radius² `r2` (mm²),
/// without cut-off.
pub fn formula(c: &Columns, d: f64, r2: f64) -> f64 {
    let n = c.depth.len();
    if d > c.depth[n - 1] {
        return 0.0;
    }
    // Linear interpolation in depth within this energy; before the first depth, the first.
    let (i, f) = if d <= c.depth[0] {
        (0, 0.0)
    } else {
        let i = (1..n).find(|&i| c.depth[i] >= d).unwrap();
        (i - 1, (d - c.depth[i - 1]) / (c.depth[i] - c.depth[i - 1]))
    };
    let at = |v: &Vec<f64>| {
        if f == 0.0 {
            v[i]
        } else {
            v[i] * (1.0 - f) + v[i + 1] * f
        }
    };
    let mut g = 0.0;
    for k in 0..c.sigma.len() {
        let s2 = at(&c.sigma[k]).powi(2) + c.sigma_initial_mm.powi(2);
        g += at(&c.weight[k]) * (-r2 / (2.0 * s2)).exp() / (2.0 * std::f64::consts::PI * s2);
    }
    // MeV·cm²/g per ion × 1/mm² → Gy: × 1.6021766208e-2 / 1e6.
    at(&c.idd) * g * 1.602_176_620_8e-2 / 1e6
}

// ---- phantom and plan --------------------------------------------------------------------

/// Depth voxels along y (the beam's axis for gantry 0, HFS), 0.5 mm; 1 mm across.
pub const NI: usize = 41;
pub const NJ: usize = 660;
pub const NK: usize = 41;
pub const DY: f64 = 0.5;

/// Water everywhere (HU 0), front face at y = −0.25 mm, central column at x = z = 0.
pub fn phantom() -> CtVolume {
    let grid = Grid::axis_aligned([NI, NJ, NK], PointMm::new(-20.0, 0.0, -20.0), [1.0, DY, 1.0]).unwrap();
    Volume::filled(grid, 0i16)
}

/// Water RSP 1 at HU 0, "bone" RSP 1.6 at HU 1000.
pub fn hlut() -> Hlut {
    Hlut::from_points(
        vec![(-1024.0, 0.0), (0.0, 1.0), (1000.0, 1.6), (3000.0, 2.8)],
        Path::new("<test>"),
    )
    .unwrap()
}

pub fn plan(ion: Ion, energy: f64, weight: f64) -> IonPlan {
    IonPlan {
        sop_instance_uid: "1".into(),
        frame_of_reference_uid: "1".into(),
        patient_id: "p".into(),
        label: "pencil".into(),
        beams: vec![IonBeam {
            number: 1,
            name: "b".into(),
            radiation_type: "ION".into(),
            ion,
            gantry_angle_deg: 0.0,
            couch_angle_deg: 0.0,
            isocenter_mm: PointMm::new(0.0, 100.0, 0.0),
            patient_position: Some("HFS".into()),
            virtual_sad_mm: None,
            range_shifters: vec![],
            primary_dosimeter_unit: Some(ionguide::plan::DosimeterUnit::Particles),
            layers: vec![EnergyLayer {
                energy_mev_u: energy,
                spots: vec![Spot {
                    x_mm: 0.0,
                    y_mm: 0.0,
                    weight,
                }],
            }],
        }],
    }
}

pub const IONS: [(&str, Ion); 4] = [
    ("carbon_Generic", Ion::CARBON12),
    ("protons_Generic", Ion::PROTON),
    ("helium_Generic", Ion::HELIUM4),
    ("oxygen_Generic", Ion::OXYGEN16),
];

/// Three energies per ion, Bragg peaks near 40, 120 and 200 mm.
pub fn energies(folder: &str) -> [&'static str; 3] {
    match folder {
        "carbon_Generic" => ["133.7800", "245.7900", "332.1500"],
        "protons_Generic" => ["72.3349", "129.7775", "173.3576"],
        "helium_Generic" => ["71.2001", "129.3279", "172.5365"],
        "oxygen_Generic" => ["152.0454", "287.5036", "391.9821"],
        _ => unreachable!(),
    }
}

pub fn machine(folder: &str) -> IonMachine {
    IonMachine::from_dir(&Path::new(DATA).join(folder)).unwrap()
}

pub const PARTICLES: f64 = 1e7;

pub fn dose(ct: &CtVolume, m: &IonMachine, energy: f64) -> Volume<f32> {
    compute_dose(
        &plan(m.ion, energy, PARTICLES),
        ct,
        &hlut(),
        std::slice::from_ref(m),
        ct.grid(),
        &DoseOptions::new([f64::INFINITY; 2]),
    )
    .unwrap()
}

pub fn central_axis(d: &Volume<f32>) -> Vec<f64> {
    (0..NJ)
        .map(|j| *d.get(NI / 2, j, NK / 2).unwrap() as f64)
        .collect()
}

/// Water depth of depth voxel `j`'s centre.
pub fn depth_of(j: usize) -> f64 {
    (j as f64 + 0.5) * DY
}

/// Distal depth where `curve` (sampled at `depths`) falls to 80 % of its maximum.
pub fn r80(depths: &[f64], curve: &[f64]) -> f64 {
    let (peak, max) = curve
        .iter()
        .enumerate()
        .fold((0, 0.0), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
    let level = 0.8 * max;
    for i in peak..curve.len() - 1 {
        if curve[i] >= level && curve[i + 1] < level {
            return depths[i] + (depths[i + 1] - depths[i]) * (curve[i] - level) / (curve[i] - curve[i + 1]);
        }
    }
    panic!("no distal 80 % crossing");
}

pub fn peak_depth(depths: &[f64], curve: &[f64]) -> f64 {
    let i = (0..curve.len())
        .max_by(|&a, &b| curve[a].total_cmp(&curve[b]))
        .unwrap();
    depths[i]
}
