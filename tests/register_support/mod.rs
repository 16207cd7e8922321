//! Shared helpers for the registration tests and bench: a seeded generator, an
//! anatomy-like synthetic phantom, frames made with known transforms, and target error.
#![allow(dead_code)]

use ionguide::geometry::{Grid, RigidTransform};
use ionguide::register::resample;
use ionguide::units::{PointMm, VectorMm};
use ionguide::volume::{CtVolume, MaskVolume};
use nalgebra::{Rotation3, Unit};

/// SplitMix64: small, seeded, good enough for test noise.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Uniform in the ball of radius `r`.
    pub fn in_ball(&mut self, r: f64) -> VectorMm {
        loop {
            let v = VectorMm::new(
                2.0 * self.uniform() - 1.0,
                2.0 * self.uniform() - 1.0,
                2.0 * self.uniform() - 1.0,
            );
            if v.norm() <= 1.0 {
                return v * r;
            }
        }
    }
}

/// A synthetic phantom and its target.
pub struct Phantom {
    pub ct: CtVolume,
    pub target: MaskVolume,
    pub target_centroid_mm: PointMm,
}

fn ellipsoid(p: &PointMm, c: [f64; 3], r: [f64; 3]) -> bool {
    let d = [(p.x - c[0]) / r[0], (p.y - c[1]) / r[1], (p.z - c[2]) / r[2]];
    d[0] * d[0] + d[1] * d[1] + d[2] * d[2] <= 1.0
}

/// An anatomy-like torso: air, a body ellipse with fat rim, lungs, liver, spine, ribs every
/// 25 mm, a tumor ellipsoid (the target), smooth texture and a little white noise.
/// `variant` moves and resizes the organs, for "unrelated anatomy".
pub fn phantom(dims: [usize; 3], spacing_mm: [f64; 3], variant: u64) -> Phantom {
    let centre = PointMm::new(15.0, -40.0, -700.0);
    let half = [0, 1, 2].map(|a| (dims[a] as f64 - 1.0) * spacing_mm[a] / 2.0);
    let origin = PointMm::new(centre.x - half[0], centre.y - half[1], centre.z - half[2]);
    let grid = Grid::axis_aligned(dims, origin, spacing_mm).unwrap();
    let mut rng = Rng::new(0x5eed ^ variant.wrapping_mul(7919));
    let mut jit = |s: f64| {
        if variant == 0 {
            0.0
        } else {
            (rng.uniform() - 0.5) * 2.0 * s
        }
    };
    let (cx, cy, cz) = (centre.x, centre.y, centre.z);
    let body = [85.0 + jit(10.0), 65.0 + jit(10.0)];
    let lung_l = [cx - 40.0 + jit(10.0), cy - 5.0 + jit(10.0), cz + 10.0 + jit(20.0)];
    let lung_r = [cx + 40.0 + jit(10.0), cy - 5.0 + jit(10.0), cz + 20.0 + jit(20.0)];
    let liver = [
        cx + 30.0 + jit(15.0),
        cy + 10.0 + jit(10.0),
        cz - 60.0 + jit(20.0),
    ];
    let spine = [cx + jit(5.0), cy + 45.0 + jit(5.0)];
    let tumor_c = [cx + 22.0 + jit(10.0), cy - 8.0 + jit(8.0), cz - 5.0 + jit(10.0)];
    let tumor_r = [18.0, 14.0, 22.0];
    let phases: Vec<f64> = (0..6).map(|i| i as f64 * 1.7 + variant as f64 * 0.9).collect();
    let mut noise = Rng::new(0xc0ffee + variant);
    let mut ct = CtVolume::filled(grid.clone(), -1000);
    let mut target = MaskVolume::filled(grid.clone(), 0);
    let mut sum = VectorMm::zeros();
    let mut n = 0usize;
    let [nx, ny, _] = dims;
    for (o, v) in ct.as_slice_mut().iter_mut().enumerate() {
        let (i, j, k) = (o % nx, (o / nx) % ny, o / (nx * ny));
        let p = grid.index_to_patient([i as f64, j as f64, k as f64]);
        let (dx, dy) = ((p.x - cx) / body[0], (p.y - cy) / body[1]);
        let rho = (dx * dx + dy * dy).sqrt();
        let texture = 25.0
            * ((p.x * 0.21 + phases[0]).sin() * (p.y * 0.17 + phases[1]).cos()
                + 0.6 * (p.z * 0.11 + p.x * 0.05 + phases[2]).sin()
                + 0.5 * ((p.y + p.z) * 0.31 + phases[3]).sin());
        let mut hu = if rho > 1.0 {
            -1000.0
        } else if rho > 0.93 {
            -90.0 + 0.3 * texture
        } else {
            35.0 + texture
        };
        if rho <= 1.0 {
            let rib_z = (p.z - cz).rem_euclid(25.0);
            if (0.80..0.86).contains(&rho) && rib_z < 9.0 && dy < 0.3 {
                hu = 550.0 + texture;
            }
            if ellipsoid(&p, lung_l, [30.0, 35.0, 70.0]) || ellipsoid(&p, lung_r, [32.0, 38.0, 65.0]) {
                hu = -820.0 + 2.0 * texture;
            }
            if ellipsoid(&p, liver, [45.0, 35.0, 40.0]) {
                hu = 60.0 + 0.5 * texture;
            }
            let (sx, sy) = (p.x - spine[0], p.y - spine[1]);
            if sx * sx + sy * sy < 14.0 * 14.0 {
                hu = if sx * sx + sy * sy < 9.0 * 9.0 {
                    250.0
                } else {
                    900.0
                } + texture;
            }
            if ellipsoid(&p, tumor_c, tumor_r) {
                hu = 75.0 + 1.5 * texture;
                target.as_slice_mut()[o] = 1;
                sum += p.coords;
                n += 1;
            }
        }
        *v = (hu + 5.0 * noise.normal()).round() as i16;
    }
    Phantom {
        ct,
        target,
        target_centroid_mm: PointMm::from(sum / n as f64),
    }
}

/// A random rigid transform about `centre`: rotation ≤ `max_deg` about a random axis,
/// translation of length ≤ `max_mm`.
pub fn random_transform(rng: &mut Rng, centre: PointMm, max_mm: f64, max_deg: f64) -> RigidTransform {
    let axis = loop {
        let v = rng.in_ball(1.0);
        if v.norm() > 0.1 {
            break Unit::new_normalize(v);
        }
    };
    let angle = (rng.uniform() * max_deg).to_radians();
    RigidTransform::about_center(
        Rotation3::from_axis_angle(&axis, angle),
        centre,
        rng.in_ball(max_mm),
    )
}

/// A frame showing `planning` moved by `truth` (fixed → frame), on `grid`, with Gaussian
/// noise of `noise_hu` standard deviation.
pub fn make_frame(
    planning: &CtVolume,
    truth: &RigidTransform,
    grid: &Grid,
    noise_hu: f64,
    rng: &mut Rng,
) -> CtVolume {
    let mut frame = resample(planning, &truth.inverse(), grid, -1000);
    for v in frame.as_slice_mut() {
        *v = (*v as f64 + noise_hu * rng.normal())
            .round()
            .clamp(-1024.0, 3071.0) as i16;
    }
    frame
}

/// A grid of the same in-plane geometry holding only `fraction` of the slices, centred on
/// slice position `z_mm`.
pub fn slab_grid(grid: &Grid, fraction: f64, centre_mm: &PointMm) -> Grid {
    let [nx, ny, nz] = grid.dims();
    let n = ((nz as f64 * fraction).round() as usize).max(2);
    let kc = grid.patient_to_index(centre_mm)[2];
    let k0 = (kc - (n as f64 - 1.0) / 2.0).round().clamp(0.0, (nz - n) as f64);
    let origin = grid.index_to_patient([0.0, 0.0, k0]);
    Grid::new([nx, ny, n], origin, grid.spacing_mm(), *grid.direction()).unwrap()
}

/// Mean over the mask's voxels of |T_est(x) − T_true(x)|, mm.
pub fn target_registration_error(mask: &MaskVolume, est: &RigidTransform, truth: &RigidTransform) -> f64 {
    let g = mask.grid();
    let [nx, ny, _] = g.dims();
    let mut sum = 0.0;
    let mut n = 0usize;
    for (o, &v) in mask.as_slice().iter().enumerate() {
        if v != 0 {
            let p = g.index_to_patient([(o % nx) as f64, ((o / nx) % ny) as f64, (o / (nx * ny)) as f64]);
            sum += (est.apply(&p) - truth.apply(&p)).norm();
            n += 1;
        }
    }
    sum / n as f64
}
