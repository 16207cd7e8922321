//! Sorting a pile of DICOM files into what they are: CT series, structure sets, ion plans,
//! spatial registrations.
//!
//! A physicist points `ionguide inspect` at an export folder from a planning system; it holds
//! CT slices (possibly of several series), an RT Structure Set and an RT Ion Plan side by
//! side. Only headers are read here (parsing stops before Pixel Data).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::attrs::{self, attr, Attr, Read};
use crate::ct::{CT_SOP_CLASS, ENHANCED_CT_SOP_CLASS};

pub use crate::uids::{RT_ION_PLAN_SOP_CLASS, RT_STRUCTURE_SET_SOP_CLASS, SPATIAL_REGISTRATION_SOP_CLASS};

/// What a set of paths holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Classified {
    /// CT image files grouped by Series Instance UID (anonymized files with an empty one are
    /// grouped by Frame of Reference UID instead), in UID order.
    pub ct_series: Vec<Vec<PathBuf>>,
    /// RT Structure Set files.
    pub structure_sets: Vec<PathBuf>,
    /// RT Ion Plan files.
    pub ion_plans: Vec<PathBuf>,
    /// Spatial Registration files.
    pub spatial_registrations: Vec<PathBuf>,
    /// Files that are not DICOM or of another kind, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Why paths cannot be classified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifyError {
    /// A path does not exist or cannot be listed.
    #[error("{path}: cannot read", path = path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Classifies files and directories (directories recursively, hidden entries skipped).
pub fn classify_paths(paths: &[PathBuf]) -> Result<Classified, ClassifyError> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    files.sort();
    files.dedup();
    let mut out = Classified::default();
    let mut series: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for file in files {
        let obj = match attrs::open(&file, Read::Header) {
            Ok(obj) => obj,
            Err(e) => {
                out.skipped.push((file, format!("not readable as DICOM: {e}")));
                continue;
            }
        };
        let sop_class = obj
            .meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .trim()
            .to_string();
        // Grouping keys only: an unreadable value groups like an empty one.
        let text = |a: Attr| attrs::opt_str(&obj, a).ok().flatten().unwrap_or_default();
        let modality = text(attr!(MODALITY, "Modality"));
        match sop_class.as_str() {
            CT_SOP_CLASS | ENHANCED_CT_SOP_CLASS => {
                // Anonymizers blank the Series Instance UID; ingest then checks the group
                // (one Frame of Reference, one orientation, regular spacing) as usual.
                let uid = text(attr!(SERIES_INSTANCE_UID, "SeriesInstanceUID"));
                let key = if uid.is_empty() {
                    format!(
                        "for:{}",
                        text(attr!(FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID"))
                    )
                } else {
                    format!("series:{uid}")
                };
                series.entry(key).or_default().push(file);
            }
            RT_STRUCTURE_SET_SOP_CLASS => out.structure_sets.push(file),
            RT_ION_PLAN_SOP_CLASS => out.ion_plans.push(file),
            SPATIAL_REGISTRATION_SOP_CLASS => out.spatial_registrations.push(file),
            other => out.skipped.push((
                file,
                format!("SOP class {other} (modality {modality:?}) is not used here"),
            )),
        }
    }
    out.ct_series = series.into_values().collect();
    Ok(out)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ClassifyError> {
    let io = |source| ClassifyError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        out.push(path.to_owned());
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let child = entry.path();
        let hidden = child
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden {
            collect_files(&child, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_a_planning_export_into_series_structures_and_plans() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
        let c = classify_paths(&[root.join("STS_001"), root.join("plans/STS_001")]).unwrap();
        assert_eq!(c.ct_series.len(), 1);
        assert_eq!(c.ct_series[0].len(), 59);
        assert_eq!(c.structure_sets.len(), 1);
        // totalseg_j2k is anonymized with empty Series Instance UIDs: still one series
        let j2k = classify_paths(&[root.join("totalseg_j2k")]).unwrap();
        assert_eq!(j2k.ct_series.len(), 1);
        assert_eq!(j2k.ct_series[0].len(), 20);
        assert_eq!(c.ion_plans.len(), 2, "raw and normalized plan");
        // the NIfTI reference mask is not DICOM
        assert!(c
            .skipped
            .iter()
            .any(|(p, _)| p.to_string_lossy().ends_with(".nii.gz")));
        assert!(matches!(
            classify_paths(&[root.join("no-such-dir")]),
            Err(ClassifyError::Io { .. })
        ));
    }
}
