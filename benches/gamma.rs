//! Gamma index bench: two 167×167×129 dose grids at 3 mm (the size of the dose bench's CT),
//! the reference a two-field dose — a 100 mm sphere at 1 Gy with a 4 mm (σ) penumbra and
//! two opposed 100 × 100 mm entrance channels at 0.4 Gy along x inside a 400 × 300 mm
//! body — and the evaluated one the same dose 2 % higher and shifted 1 mm in x and 0.5 mm
//! in y. Issue 13's target: a few seconds at most. Global 3 %/3 mm and 2 %/2 mm, 10 %
//! low-dose threshold, search radius 2 DTA on a DTA/3 lattice with two refinements.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use ionguide::dose::evaluate::{gamma_index, GammaOptions};
use ionguide::geometry::Grid;
use ionguide::units::PointMm;
use ionguide::volume::Volume;

const DIMS: [usize; 3] = [167, 167, 129];
const SPACING_MM: f64 = 3.0;

/// A smooth step from 1 (inside, `s` < 0) to 0 (outside), σ 4 mm: the logistic
/// approximation of a Gaussian penumbra's error function.
fn edge(s_mm: f64) -> f64 {
    1.0 / (1.0 + (1.702 * s_mm / 4.0).exp())
}

fn dose(shift_mm: [f64; 2], scale: f64) -> Volume<f32> {
    let c = [
        (DIMS[0] - 1) as f64 / 2.0,
        (DIMS[1] - 1) as f64 / 2.0,
        (DIMS[2] - 1) as f64 / 2.0,
    ];
    let grid = Grid::axis_aligned(
        DIMS,
        PointMm::new(-c[0] * SPACING_MM, -c[1] * SPACING_MM, -c[2] * SPACING_MM),
        [SPACING_MM; 3],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut v = Volume::<f32>::filled(grid.clone(), 0.0);
    for k in 0..DIMS[2] {
        for j in 0..DIMS[1] {
            for i in 0..DIMS[0] {
                let p = grid.index_to_patient([i as f64, j as f64, k as f64]);
                let (x, y, z) = (p.x - shift_mm[0], p.y - shift_mm[1], p.z);
                let body = edge(((x / 200.0).powi(2) + (y / 150.0).powi(2)).sqrt() * 150.0 - 150.0);
                let sphere = edge((x * x + y * y + z * z).sqrt() - 50.0);
                let channel = edge(y.abs() - 50.0) * edge(z.abs() - 50.0);
                let d = body * (sphere + 0.4 * channel * (1.0 - sphere));
                if let Some(o) = v.get_mut(i, j, k) {
                    *o = (scale * d) as f32;
                }
            }
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let reference = dose([0.0, 0.0], 1.0);
    let evaluated = dose([1.0, 0.5], 1.02);
    for (pct, dta) in [(3.0, 3.0), (2.0, 2.0)] {
        for threads in [1, 2] {
            let t = Instant::now();
            let r = gamma_index(
                &reference,
                &evaluated,
                &GammaOptions::new(pct, dta).with_threads(threads),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            eprintln!(
                "gamma {pct}%/{dta}mm: {} of {} voxels evaluated, pass {:.2} %, mean γ {:.3}, max γ {:.2}; one run on {threads} thread(s) {:.3} s",
                r.evaluated_voxels,
                reference.as_slice().len(),
                r.pass_rate_percent,
                r.mean_gamma,
                r.max_gamma,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let mut g = c.benchmark_group("gamma");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(5));
    for (name, pct, dta) in [("3pct_3mm", 3.0, 3.0), ("2pct_2mm", 2.0, 2.0)] {
        let options = GammaOptions::new(pct, dta);
        g.bench_function(format!("{name}_167x167x129_3mm_1thread"), |b| {
            b.iter(|| gamma_index(&reference, &evaluated, &options).unwrap_or_else(|e| panic!("{e}")))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
