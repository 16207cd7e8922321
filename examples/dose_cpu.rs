//! scratch: CPU time of the dose bench case (not committed)
#![allow(missing_docs)]
use ionguide::dose::{compute_dose, DoseOptions, IonMachine};
use ionguide::geometry::Grid;
use ionguide::plan::{DosimeterUnit, EnergyLayer, IonBeam, IonPlan, Spot};
use ionguide::range::Hlut;
use ionguide::units::PointMm;
use ionguide::volume::CtVolume;
use std::path::Path;
use std::time::Instant;
include!("/tmp/body.rs");
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn main() {
    let threads: usize = std::env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(1);
    let n: usize = std::env::args().nth(2).map(|a| a.parse().unwrap()).unwrap_or(5);
    let machine = IonMachine::from_dir(Path::new("tests/data/matrad/carbon_Generic")).unwrap();
    let plan = IonPlan {
        sop_instance_uid: "1".into(),
        frame_of_reference_uid: "1".into(),
        patient_id: "b".into(),
        label: "d".into(),
        beams: vec![beam(1, 90.0, &machine), beam(2, 270.0, &machine)],
    };
    let ct = phantom();
    let hlut = Hlut::matrad_generic();
    let machines = [machine];
    let options = DoseOptions::new([machines[0].sad_mm; 2]).with_threads(threads);
    let mut sum = 0.0f64;
    for _ in 0..n {
        let (c0, t) = (cpu_s(), Instant::now());
        let dose = compute_dose(&plan, &ct, &hlut, &machines, ct.grid(), &options).unwrap();
        let s: f64 = dose.as_slice().iter().map(|&v| v as f64).sum();
        sum = s;
        println!(
            "wall {:.3} s cpu {:.3} s",
            t.elapsed().as_secs_f64(),
            cpu_s() - c0
        );
    }
    println!("sum {sum:.9e}");
}
