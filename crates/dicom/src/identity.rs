//! Who and what a DICOM object is about: its SOP Instance UID, Patient ID and, for a plan,
//! the structure set it was made on. The session loader uses these to refuse inputs that do
//! not belong together (another patient's plan, a plan made on another structure set).
//!
//! Read apart from the full readers (`rtplan`, `rtstruct`) so that their model types stay
//! what the pipeline computes with; the identity is only compared at load time.

use std::path::{Path, PathBuf};

use super::attrs::{self, attr, AttrError, OpenError, Read};

/// The identifying attributes of one object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectIdentity {
    /// SOP Instance UID (0008,0018), from the data set, else the file meta group.
    pub sop_instance_uid: Option<String>,
    /// Patient ID (0010,0020), when present and not empty.
    pub patient_id: Option<String>,
    /// Patient's Name (0010,0010), when present and not empty (what an RT Dose written on
    /// this CT repeats).
    pub patient_name: Option<String>,
    /// Referenced SOP Instance UIDs (0008,1155) of the Referenced Structure Set Sequence
    /// (300C,0060): the structure set(s) a plan was made on. Empty when it names none.
    pub referenced_structure_set_uids: Vec<String>,
    /// For a plan, each Ion Beam Sequence (300A,03A2) item's Beam Number and Treatment
    /// Machine Name (300A,00B2): the room a beam was planned for. Empty for other objects.
    pub beam_machines: Vec<BeamMachine>,
}

/// The treatment machine one plan beam names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BeamMachine {
    /// Beam Number (300A,00C0), when present.
    pub beam_number: Option<i32>,
    /// Treatment Machine Name (300A,00B2), when present and not empty.
    pub machine: Option<String>,
}

/// Why an object's identity could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file could not be opened or parsed.
    #[error("{}: cannot read", path.display())]
    Open {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: OpenError,
    },
    /// An identifying attribute is unreadable.
    #[error("{}: {context}", path.display())]
    Attribute {
        /// File.
        path: PathBuf,
        /// Where in the file.
        context: &'static str,
        /// What is wrong.
        #[source]
        source: AttrError,
    },
}

/// Reads the identity of the DICOM object in `path`.
pub fn read_identity(path: impl AsRef<Path>) -> Result<ObjectIdentity, IdentityError> {
    let path = path.as_ref();
    let obj = attrs::open(path, Read::Header).map_err(|source| IdentityError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let at = |context: &'static str| {
        move |source| IdentityError::Attribute {
            path: path.to_path_buf(),
            context,
            source,
        }
    };
    let sop_instance_uid = attrs::opt_str(&obj, attr!(SOP_INSTANCE_UID, "SOPInstanceUID"))
        .map_err(at("dataset"))?
        .or_else(|| {
            let m = obj
                .meta()
                .media_storage_sop_instance_uid()
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string();
            (!m.is_empty()).then_some(m)
        });
    let patient_id = attrs::opt_str(&obj, attr!(PATIENT_ID, "PatientID")).map_err(at("dataset"))?;
    let patient_name = attrs::opt_str(&obj, attr!(PATIENT_NAME, "PatientName")).map_err(at("dataset"))?;
    let mut referenced_structure_set_uids = Vec::new();
    if let Some(items) = attrs::opt_items(
        &obj,
        attr!(
            REFERENCED_STRUCTURE_SET_SEQUENCE,
            "ReferencedStructureSetSequence"
        ),
    )
    .map_err(at("dataset"))?
    {
        for item in items {
            if let Some(uid) = attrs::opt_str(
                item,
                attr!(REFERENCED_SOP_INSTANCE_UID, "ReferencedSOPInstanceUID"),
            )
            .map_err(at("Referenced Structure Set Sequence"))?
            {
                referenced_structure_set_uids.push(uid);
            }
        }
    }
    let mut beam_machines = Vec::new();
    if let Some(items) =
        attrs::opt_items(&obj, attr!(ION_BEAM_SEQUENCE, "IonBeamSequence")).map_err(at("dataset"))?
    {
        for item in items {
            let beam_number = attrs::opt_int::<i32>(item, attr!(BEAM_NUMBER, "BeamNumber"))
                .map_err(at("Ion Beam Sequence"))?;
            let machine = attrs::opt_str(item, attr!(TREATMENT_MACHINE_NAME, "TreatmentMachineName"))
                .map_err(at("Ion Beam Sequence"))?;
            beam_machines.push(BeamMachine { beam_number, machine });
        }
    }
    Ok(ObjectIdentity {
        sop_instance_uid,
        patient_id,
        patient_name,
        referenced_structure_set_uids,
        beam_machines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data")
            .join(rel)
    }

    // Values read off the files with an independent byte scan of their tags.
    #[test]
    fn the_sts_001_plan_names_its_structure_set_and_patient() {
        let plan = read_identity(data("plans/STS_001/RPSTS001G0G90.dcm")).unwrap();
        assert_eq!(plan.patient_id.as_deref(), Some("STS_001"));
        assert_eq!(
            plan.referenced_structure_set_uids,
            ["1.3.6.1.4.1.14519.5.2.1.5168.1900.294304652189082068687304577278"]
        );
        let rs = read_identity(data("STS_001/mask/RS.dcm")).unwrap();
        assert_eq!(
            rs.sop_instance_uid.as_deref(),
            Some("1.3.6.1.4.1.14519.5.2.1.5168.1900.294304652189082068687304577278")
        );
        assert_eq!(rs.patient_id.as_deref(), Some("STS_001"));
        assert!(rs.referenced_structure_set_uids.is_empty());
        assert!(rs.beam_machines.is_empty());
        // dcmdump +P 300a,00c0 +P 300a,00b2: beams 0 and 1, both on "OpenTPS_generic"
        let machine = Some("OpenTPS_generic".to_owned());
        assert_eq!(
            plan.beam_machines,
            [0, 1].map(|n| BeamMachine {
                beam_number: Some(n),
                machine: machine.clone()
            })
        );
    }

    #[test]
    fn a_file_that_is_not_dicom_is_an_error_naming_it() {
        let e = read_identity(data("README.md")).unwrap_err();
        assert!(e.to_string().contains("README.md"), "{e}");
    }
}
