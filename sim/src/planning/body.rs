//! The patient's outline on a user's CT, which the planner needs to tell skin from air and
//! the patient from the couch.
//!
//! When the structure set has an outline ROI (named `BODY`, `EXTERNAL`, `SKIN` or
//! `OUTLINE`, any case: RT Structure Sets carry the RT ROI Interpreted Type elsewhere and
//! the reader keeps names only) it is rasterized on the CT. Otherwise the outline is found
//! from the CT itself, as planning systems' automatic "external" tools do:
//! 1. voxels above a threshold (default −400 HU: between air, −1000, and lung, −700 … −900
//!    in expiration, on one side and fat, −100, on the other) are tissue;
//! 2. the largest 6-connected component of them is the patient — the couch, immobilisation
//!    and the other limb are separate components, kept out;
//! 3. holes inside it are filled slice by slice (4-connected flood of the non-tissue pixels
//!    from each slice's border: what the flood does not reach is enclosed — lungs, bowel
//!    gas, the trachea — and part of the body).

use std::collections::VecDeque;

use ionguide::structure::{Roi, StructureSet};
use ionguide::volume::{CtVolume, MaskVolume};

/// The default tissue threshold of the automatic outline, HU.
pub const BODY_THRESHOLD_HU: f64 = -400.0;

/// ROI names (compared without case) taken as the patient's outline.
pub const BODY_ROI_NAMES: [&str; 4] = ["BODY", "EXTERNAL", "SKIN", "OUTLINE"];

/// Where an outline came from.
#[derive(Debug, Clone, PartialEq)]
pub enum BodySource {
    /// The structure set's outline ROI of this name.
    Roi(String),
    /// Found from the CT: tissue above `threshold_hu`, largest component, holes filled.
    Threshold {
        /// The threshold, HU.
        threshold_hu: f64,
        /// An outline ROI that was there but covers no voxel of the CT.
        empty_roi: Option<String>,
    },
}

impl std::fmt::Display for BodySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodySource::Roi(name) => write!(f, "ROI {name:?}"),
            BodySource::Threshold {
                threshold_hu,
                empty_roi,
            } => {
                write!(
                    f,
                    "found from the CT (> {threshold_hu} HU, largest connected component, holes filled)"
                )?;
                match empty_roi {
                    Some(name) => write!(f, "; ROI {name:?} covers no voxel of the CT"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The patient's outline on the CT's grid.
#[derive(Debug, Clone)]
pub struct BodyMask {
    /// 1 inside the body, 0 outside.
    pub mask: MaskVolume,
    /// Voxels inside.
    pub voxels: usize,
    /// Where it came from.
    pub source: BodySource,
}

/// The structure set's outline ROI, if it has one.
pub fn body_roi(structures: &StructureSet) -> Option<&Roi> {
    structures.rois.iter().find(|r| {
        BODY_ROI_NAMES
            .iter()
            .any(|n| r.name.trim().eq_ignore_ascii_case(n))
    })
}

/// The outline of `ct`: the structure set's outline ROI when it has one that covers any
/// voxel, else [`body_from_ct`] at `threshold_hu`.
pub fn body_outline(ct: &CtVolume, structures: &StructureSet, threshold_hu: f64) -> BodyMask {
    let mut empty_roi = None;
    if let Some(roi) = body_roi(structures) {
        let m = roi.rasterize(ct.grid());
        if m.voxels > 0 {
            return BodyMask {
                mask: m.mask,
                voxels: m.voxels,
                source: BodySource::Roi(roi.name.clone()),
            };
        }
        empty_roi = Some(roi.name.clone());
    }
    let mut body = body_from_ct(ct, threshold_hu);
    body.source = BodySource::Threshold {
        threshold_hu,
        empty_roi,
    };
    body
}

/// The outline found from the CT (see the module's documentation for the method).
pub fn body_from_ct(ct: &CtVolume, threshold_hu: f64) -> BodyMask {
    let grid = ct.grid().clone();
    let [nx, ny, nz] = grid.dims();
    let hu = ct.as_slice();
    let tissue: Vec<bool> = hu.iter().map(|&h| f64::from(h) > threshold_hu).collect();
    // Largest 6-connected component (labels in one pass of breadth-first floods).
    let mut label = vec![0u32; hu.len()];
    let mut best = (0u32, 0usize);
    let mut next = 0u32;
    let mut queue = VecDeque::new();
    for start in 0..hu.len() {
        if !tissue[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        label[start] = next;
        queue.push_back(start);
        let mut size = 0usize;
        while let Some(o) = queue.pop_front() {
            size += 1;
            let (i, j, k) = (o % nx, (o / nx) % ny, o / (nx * ny));
            let mut visit = |n: usize| {
                if tissue[n] && label[n] == 0 {
                    label[n] = next;
                    queue.push_back(n);
                }
            };
            if i > 0 {
                visit(o - 1);
            }
            if i + 1 < nx {
                visit(o + 1);
            }
            if j > 0 {
                visit(o - nx);
            }
            if j + 1 < ny {
                visit(o + nx);
            }
            if k > 0 {
                visit(o - nx * ny);
            }
            if k + 1 < nz {
                visit(o + nx * ny);
            }
        }
        if size > best.1 {
            best = (next, size);
        }
    }
    let mut inside: Vec<u8> = label.iter().map(|&l| u8::from(l != 0 && l == best.0)).collect();
    // Fill holes per slice: flood the outside from the slice border through non-body pixels.
    let mut outside = vec![false; nx * ny];
    let mut stack = Vec::new();
    for k in 0..nz {
        outside.iter_mut().for_each(|o| *o = false);
        let plane = &mut inside[k * nx * ny..(k + 1) * nx * ny];
        for j in 0..ny {
            for i in 0..nx {
                if (i == 0 || j == 0 || i + 1 == nx || j + 1 == ny) && plane[j * nx + i] == 0 {
                    outside[j * nx + i] = true;
                    stack.push(j * nx + i);
                }
            }
        }
        while let Some(p) = stack.pop() {
            let (i, j) = (p % nx, p / nx);
            let mut visit = |n: usize| {
                if plane[n] == 0 && !outside[n] {
                    outside[n] = true;
                    stack.push(n);
                }
            };
            if i > 0 {
                visit(p - 1);
            }
            if i + 1 < nx {
                visit(p + 1);
            }
            if j > 0 {
                visit(p - nx);
            }
            if j + 1 < ny {
                visit(p + nx);
            }
        }
        for (v, o) in plane.iter_mut().zip(&outside) {
            if !*o {
                *v = 1;
            }
        }
    }
    let voxels = inside.iter().filter(|&&v| v != 0).count();
    let data = ndarray_from(&grid, inside);
    BodyMask {
        mask: data,
        voxels,
        source: BodySource::Threshold {
            threshold_hu,
            empty_roi: None,
        },
    }
}

fn ndarray_from(grid: &ionguide::geometry::Grid, data: Vec<u8>) -> MaskVolume {
    let mut mask = MaskVolume::filled(grid.clone(), 0);
    mask.as_slice_mut().copy_from_slice(&data);
    mask
}
