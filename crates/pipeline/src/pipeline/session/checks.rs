//! The load checks: the planning CT, the structure set and the plan a configuration names
//! must belong together before anything listens or sends. Pairing a plan with the wrong image
//! is one of the classic ways a radiotherapy system hurts a patient, so each refusal names
//! the files, the attribute and both values.

use std::fmt;
use std::path::{Path, PathBuf};

use super::SessionError;
use crate::dicom::identity::ObjectIdentity;
use crate::dicom::rtplan::{
    check_isocenters_inside, check_spot_maps, PlanError, DEFAULT_MAX_FIELD_HALF_SIZE_MM,
};
use crate::geometry::Grid;
use crate::plan::IonPlan;

/// Which of the session's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The planning CT (a folder).
    PlanningCt,
    /// The RT Structure Set.
    StructureSet,
    /// The RT Ion Plan.
    Plan,
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Input::PlanningCt => "planning CT",
            Input::StructureSet => "structure set",
            Input::Plan => "plan",
        })
    }
}

/// Inputs that do not belong together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InputMismatch {
    /// The structure set or the plan is in another patient coordinate system than the CT.
    #[error(
        "{input} {} Frame of Reference UID {found} is not the planning CT's (CT {}: {ct}): \
         it was made on another scan",
        path.display(),
        ct_dir.display()
    )]
    FrameOfReference {
        /// Structure set or plan.
        input: Input,
        /// Its file.
        path: PathBuf,
        /// Its Frame of Reference UID.
        found: String,
        /// The planning CT folder.
        ct_dir: PathBuf,
        /// The CT's Frame of Reference UID.
        ct: String,
    },
    /// The plan names a structure set, and it is not the one given.
    #[error(
        "plan {} Referenced Structure Set SOP Instance UID {} is not the structure set given \
         ({}: SOP Instance UID {})",
        plan.display(),
        referenced.join(", "),
        structures.display(),
        given.as_deref().unwrap_or("(none)")
    )]
    StructureSet {
        /// The plan file.
        plan: PathBuf,
        /// What its Referenced Structure Set Sequence names.
        referenced: Vec<String>,
        /// The structure set file.
        structures: PathBuf,
        /// Its SOP Instance UID.
        given: Option<String>,
    },
    /// Two inputs name different patients.
    #[error(
        "{input} {} Patient ID {found:?} is not the {other}'s ({}: {expected:?}): another patient's data",
        path.display(),
        other_path.display()
    )]
    PatientId {
        /// The input found to differ.
        input: Input,
        /// Its file.
        path: PathBuf,
        /// Its Patient ID.
        found: String,
        /// The input compared with.
        other: Input,
        /// Its file or folder.
        other_path: PathBuf,
        /// Its Patient ID.
        expected: String,
    },
    /// The configuration names a patient (`planning.patient_id`, the one every frame must
    /// carry) and the planning data are another's: frames of the configured patient would be
    /// steered by another patient's plan.
    #[error(
        "planning.patient_id {configured:?} is not the {input}'s Patient ID ({}: {found:?})",
        path.display()
    )]
    ConfiguredPatientId {
        /// The configured Patient ID.
        configured: String,
        /// The input compared with (the CT, or the plan when the CT names no patient).
        input: Input,
        /// Its file or folder.
        path: PathBuf,
        /// Its Patient ID.
        found: String,
    },
    /// A beam's isocenter lies outside the planning CT.
    #[error(
        "plan {} beam {beam:?} Isocenter Position ({:.2}, {:.2}, {:.2}) mm lies outside the \
         planning CT (CT {}: ({:.2}, {:.2}, {:.2}) to ({:.2}, {:.2}, {:.2}) mm)",
        plan.display(),
        isocenter_mm[0], isocenter_mm[1], isocenter_mm[2],
        ct_dir.display(),
        ct_min_mm[0], ct_min_mm[1], ct_min_mm[2],
        ct_max_mm[0], ct_max_mm[1], ct_max_mm[2]
    )]
    IsocenterOutsideCt {
        /// The plan file.
        plan: PathBuf,
        /// Beam name.
        beam: String,
        /// Isocenter, patient LPS mm.
        isocenter_mm: [f64; 3],
        /// The planning CT folder.
        ct_dir: PathBuf,
        /// CT bounding box lower corner (outer voxel faces), mm.
        ct_min_mm: [f64; 3],
        /// CT bounding box upper corner, mm.
        ct_max_mm: [f64; 3],
    },
}

/// What the checks compare, as read from the files.
pub(super) struct Inputs<'a> {
    pub ct_dir: &'a Path,
    pub ct_frame_of_reference_uid: &'a str,
    pub ct_patient_id: Option<&'a str>,
    pub ct_grid: &'a Grid,
    pub structures: &'a Path,
    pub structures_frame_of_reference_uid: &'a str,
    pub structures_identity: &'a ObjectIdentity,
    pub plan_path: &'a Path,
    pub plan: &'a IonPlan,
    pub plan_identity: &'a ObjectIdentity,
    /// `planning.patient_id`, when configured.
    pub configured_patient_id: Option<&'a str>,
}

fn same(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

/// Present and not blank.
fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// Runs every load check, first refusal wins.
// Set-up time only, once per session: the error's size costs nothing here.
#[allow(clippy::result_large_err)]
pub(super) fn check(i: &Inputs<'_>) -> Result<(), SessionError> {
    let for_mismatch = |input, path: &Path, found: &str| InputMismatch::FrameOfReference {
        input,
        path: path.to_path_buf(),
        found: found.to_string(),
        ct_dir: i.ct_dir.to_path_buf(),
        ct: i.ct_frame_of_reference_uid.to_string(),
    };
    if !same(i.structures_frame_of_reference_uid, i.ct_frame_of_reference_uid) {
        return Err(for_mismatch(
            Input::StructureSet,
            i.structures,
            i.structures_frame_of_reference_uid,
        )
        .into());
    }
    if !same(&i.plan.frame_of_reference_uid, i.ct_frame_of_reference_uid) {
        return Err(for_mismatch(Input::Plan, i.plan_path, &i.plan.frame_of_reference_uid).into());
    }

    let referenced = &i.plan_identity.referenced_structure_set_uids;
    let given_uid = given(i.structures_identity.sop_instance_uid.as_deref());
    if !referenced.is_empty() && !given_uid.is_some_and(|g| referenced.iter().any(|r| same(r, g))) {
        return Err(InputMismatch::StructureSet {
            plan: i.plan_path.to_path_buf(),
            referenced: referenced.clone(),
            structures: i.structures.to_path_buf(),
            given: given_uid.map(str::to_string),
        }
        .into());
    }

    // Each input against the CT; against the structure set when the CT names no patient.
    let ct = given(i.ct_patient_id).map(|id| (Input::PlanningCt, i.ct_dir, id));
    let rs =
        given(i.structures_identity.patient_id.as_deref()).map(|id| (Input::StructureSet, i.structures, id));
    let plan = given(i.plan_identity.patient_id.as_deref()).map(|id| (Input::Plan, i.plan_path, id));
    for (found, reference) in [(rs, ct), (plan, ct.or(rs))] {
        if let (Some((input, path, id)), Some((other, other_path, expected))) = (found, reference) {
            if id != expected {
                return Err(InputMismatch::PatientId {
                    input,
                    path: path.to_path_buf(),
                    found: id.to_string(),
                    other,
                    other_path: other_path.to_path_buf(),
                    expected: expected.to_string(),
                }
                .into());
            }
        }
    }

    // The configured patient (whom every frame must name) against the data that agree so far.
    if let (Some(configured), Some((input, path, found))) =
        (given(i.configured_patient_id), ct.or(rs).or(plan))
    {
        if configured != found {
            return Err(InputMismatch::ConfiguredPatientId {
                configured: configured.to_string(),
                input,
                path: path.to_path_buf(),
                found: found.to_string(),
            }
            .into());
        }
    }

    let plan_error = |source| SessionError::Plan {
        path: i.plan_path.to_path_buf(),
        source,
    };
    check_isocenters_inside(i.plan, i.ct_grid).map_err(|e| match e {
        PlanError::IsocenterOutsideCt {
            beam,
            isocenter_mm,
            ct_min_mm,
            ct_max_mm,
        } => InputMismatch::IsocenterOutsideCt {
            plan: i.plan_path.to_path_buf(),
            beam,
            isocenter_mm,
            ct_dir: i.ct_dir.to_path_buf(),
            ct_min_mm,
            ct_max_mm,
        }
        .into(),
        other => plan_error(other),
    })?;
    check_spot_maps(i.plan, DEFAULT_MAX_FIELD_HALF_SIZE_MM).map_err(plan_error)?;
    Ok(())
}
