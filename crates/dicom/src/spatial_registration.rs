//! DICOM Spatial Registration ↔ [`RoomSetup`]: how the in-room scanner's Frame of Reference
//! maps onto the planning CT's.
//!
//! A Spatial Registration object (PS3.3 A.39, C.20.2) lists Frames of Reference, each with the
//! matrices that take its points into one *registered* coordinate system — the object's own
//! Frame of Reference (0020,0052):
//!
//! ```text
//! [x_reg y_reg z_reg 1]ᵀ = M · [x_src y_src z_src 1]ᵀ    (M row-major, 16 values of (3006,00C6))
//! ```
//!
//! With `M_p` for the planning CT's Frame of Reference and `M_r` for the in-room scanner's,
//! a planning point `p` is `M_r⁻¹ · M_p · p` in the room. A Frame of Reference that is the
//! registered one and has no item of its own maps by the identity. Several matrices in one
//! item's Matrix Sequence apply in order (the first to the source point first).
//!
//! Only a rigid map is accepted: the tracking, the beam geometry and the water-equivalent
//! depths are all made for distances that do not change, and a scaled or sheared setup would
//! say the in-room images are not what the plan was made on. Each matrix's last row must be
//! `0 0 0 1`; the 3×3 part must be a rotation to within [`RIGID_TOLERANCE`] (decimal strings
//! hold ~16 characters, so a writer's rounding is far below it). The rotation kept is the
//! nearest exact one.

use std::path::{Path, PathBuf};

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use nalgebra::{Matrix3, Matrix4, Rotation3};

use super::attrs::{self, attr, AttrError, OpenError, Read};
use crate::geometry::{RigidTransform, RoomSetup};
use crate::write::elements::{ds, meta, part10, sq, text};
use crate::write::WriteError;

/// Largest deviation of a matrix's 3×3 part from a rotation (`|MᵀM − I|`, any entry) and of
/// its determinant from 1.
pub const RIGID_TOLERANCE: f64 = 1e-4;

/// Largest translation of a Frame of Reference's map into the registered one, and of the
/// planning → room map, mm. Patient coordinates of a scanner lie within a few metres of its
/// origin; a map moving points farther says the object is not a setup registration (and
/// values near `f64::MAX` would overflow when composed).
pub const MAX_TRANSLATION_MM: f64 = 10_000.0;

/// Why a Spatial Registration object cannot give the room setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The file could not be read or parsed.
    #[error("{path}: {source}")]
    Open {
        /// File.
        path: PathBuf,
        /// Cause.
        source: OpenError,
    },
    /// Not a Spatial Registration object.
    #[error("{path}: SOP Class {found} is not Spatial Registration Storage ({expected})")]
    WrongSopClass {
        /// File.
        path: PathBuf,
        /// SOP Class UID found.
        found: String,
        /// The one expected.
        expected: &'static str,
    },
    /// An attribute is missing or unreadable.
    #[error("{path}: {context}: {source}")]
    Attribute {
        /// File.
        path: PathBuf,
        /// Where in the object.
        context: String,
        /// Cause.
        source: AttrError,
    },
    /// The planning CT's Frame of Reference is not registered by this object.
    #[error(
        "{path}: the planning CT's Frame of Reference {planning} is not in this registration \
         (it registers {found:?})"
    )]
    PlanningNotRegistered {
        /// File.
        path: PathBuf,
        /// The planning CT's Frame of Reference UID.
        planning: String,
        /// Frames of Reference the object names.
        found: Vec<String>,
    },
    /// No Frame of Reference other than the planning CT's, or more than one.
    #[error(
        "{path}: expected exactly one in-room Frame of Reference besides the planning CT's, found {found:?}"
    )]
    RoomFrameOfReference {
        /// File.
        path: PathBuf,
        /// The other Frames of Reference named.
        found: Vec<String>,
    },
    /// The same Frame of Reference has two registration items.
    #[error("{path}: Frame of Reference {uid} is registered twice (items {first} and {second})")]
    Duplicate {
        /// File.
        path: PathBuf,
        /// Frame of Reference UID.
        uid: String,
        /// First item (1-based).
        first: usize,
        /// Second item (1-based).
        second: usize,
    },
    /// A matrix type this reader does not know.
    #[error("{path}: registration item {item}, matrix {matrix}: matrix type {found:?} is not RIGID, RIGID_SCALE or AFFINE")]
    UnknownMatrixType {
        /// File.
        path: PathBuf,
        /// Registration item (1-based).
        item: usize,
        /// Matrix (1-based).
        matrix: usize,
        /// The type found.
        found: String,
    },
    /// A matrix that is not a rigid transform.
    #[error("{path}: registration item {item}, matrix {matrix} is not rigid: {reason}")]
    NotRigid {
        /// File.
        path: PathBuf,
        /// Registration item (1-based).
        item: usize,
        /// Matrix (1-based).
        matrix: usize,
        /// What is wrong.
        reason: String,
    },
    /// The product of an item's matrices is not rigid, though each one is within tolerance
    /// (small scalings compound).
    #[error("{path}: registration item {item}: its {matrices} matrices together are not rigid: {reason}")]
    CombinedNotRigid {
        /// File.
        path: PathBuf,
        /// Registration item (1-based).
        item: usize,
        /// Matrices in the item.
        matrices: usize,
        /// What is wrong.
        reason: String,
    },
    /// A translation no setup registration can hold.
    #[error("{path}: {what} moves points by {translation_mm:?} mm, more than {limit_mm} mm")]
    ImplausibleTranslation {
        /// File.
        path: PathBuf,
        /// Which map.
        what: String,
        /// Its translation, mm.
        translation_mm: [f64; 3],
        /// The limit, mm.
        limit_mm: f64,
    },
    /// The object could not be written.
    #[error("writing a Spatial Registration object: {0}")]
    Write(String),
}

/// Reads the room setup from a Spatial Registration file: the map from the planning CT's
/// Frame of Reference (`planning_for_uid`) to the one other Frame of Reference it registers.
pub fn read_room_setup(
    path: impl AsRef<Path>,
    planning_for_uid: &str,
) -> Result<RoomSetup, RegistrationError> {
    let path = path.as_ref();
    let obj = attrs::open(path, Read::Whole).map_err(|source| RegistrationError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    parse_room_setup(path, &obj, planning_for_uid)
}

/// Reads the room setup from Part 10 bytes; `path` only names the source in errors.
pub fn read_room_setup_bytes(
    bytes: &[u8],
    path: impl AsRef<Path>,
    planning_for_uid: &str,
) -> Result<RoomSetup, RegistrationError> {
    let path = path.as_ref();
    let obj = attrs::parse(bytes, Read::Whole).map_err(|source| RegistrationError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    parse_room_setup(path, &obj, planning_for_uid)
}

fn parse_room_setup(
    path: &Path,
    obj: &dicom_object::DefaultDicomObject,
    planning_for_uid: &str,
) -> Result<RoomSetup, RegistrationError> {
    let at = |context: String| {
        move |source| RegistrationError::Attribute {
            path: path.to_path_buf(),
            context,
            source,
        }
    };
    let sop = attrs::sop_class_uid(obj).map_err(at("dataset".into()))?;
    if sop.trim() != uids::SPATIAL_REGISTRATION_STORAGE {
        return Err(RegistrationError::WrongSopClass {
            path: path.to_path_buf(),
            found: sop,
            expected: uids::SPATIAL_REGISTRATION_STORAGE,
        });
    }
    let registered = attrs::req_str(obj, attr!(FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID"))
        .map_err(at("dataset".into()))?;
    let items = attrs::req_items(obj, attr!(REGISTRATION_SEQUENCE, "RegistrationSequence"))
        .map_err(at("dataset".into()))?;

    // Every Frame of Reference with its map into the registered one.
    let mut maps: Vec<(String, Matrix4<f64>, usize)> = Vec::with_capacity(items.len() + 1);
    for (n, item) in items.iter().enumerate() {
        let item_no = n + 1;
        let context = format!("registration item {item_no}");
        let uid = attrs::req_str(item, attr!(FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID"))
            .map_err(at(context.clone()))?;
        if let Some((_, _, first)) = maps.iter().find(|(u, _, _)| *u == uid) {
            return Err(RegistrationError::Duplicate {
                path: path.to_path_buf(),
                uid,
                first: *first,
                second: item_no,
            });
        }
        let matrix_reg = attrs::opt_first_item(
            item,
            attr!(MATRIX_REGISTRATION_SEQUENCE, "MatrixRegistrationSequence"),
        )
        .map_err(at(context.clone()))?
        .ok_or_else(|| {
            at(context.clone())(AttrError::Missing {
                name: "MatrixRegistrationSequence",
                tag: tags::MATRIX_REGISTRATION_SEQUENCE,
            })
        })?;
        let matrices = attrs::req_items(matrix_reg, attr!(MATRIX_SEQUENCE, "MatrixSequence"))
            .map_err(at(context.clone()))?;
        let mut combined = Matrix4::identity();
        for (m, entry) in matrices.iter().enumerate() {
            let matrix_no = m + 1;
            let context = format!("registration item {item_no}, matrix {matrix_no}");
            let kind = attrs::req_str(
                entry,
                attr!(
                    FRAME_OF_REFERENCE_TRANSFORMATION_MATRIX_TYPE,
                    "FrameOfReferenceTransformationMatrixType"
                ),
            )
            .map_err(at(context.clone()))?;
            if !matches!(kind.as_str(), "RIGID" | "RIGID_SCALE" | "AFFINE") {
                return Err(RegistrationError::UnknownMatrixType {
                    path: path.to_path_buf(),
                    item: item_no,
                    matrix: matrix_no,
                    found: kind,
                });
            }
            let values: [f64; 16] = attrs::req_f64_n(
                entry,
                attr!(
                    FRAME_OF_REFERENCE_TRANSFORMATION_MATRIX,
                    "FrameOfReferenceTransformationMatrix"
                ),
            )
            .map_err(at(context))?;
            let m4 = Matrix4::from_row_slice(&values);
            check_rigid(&m4).map_err(|reason| RegistrationError::NotRigid {
                path: path.to_path_buf(),
                item: item_no,
                matrix: matrix_no,
                reason,
            })?;
            combined = m4 * combined;
        }
        if matrices.len() > 1 {
            check_rigid(&combined).map_err(|reason| RegistrationError::CombinedNotRigid {
                path: path.to_path_buf(),
                item: item_no,
                matrices: matrices.len(),
                reason,
            })?;
        }
        check_translation(path, &format!("registration item {item_no}"), &combined)?;
        maps.push((uid, combined, item_no));
    }
    if !maps.iter().any(|(u, _, _)| *u == registered) {
        maps.push((registered, Matrix4::identity(), 0));
    }

    let planning_for_uid = planning_for_uid.trim();
    let Some(to_reg_from_planning) = maps
        .iter()
        .find(|(u, _, _)| u == planning_for_uid)
        .map(|(_, m, _)| *m)
    else {
        return Err(RegistrationError::PlanningNotRegistered {
            path: path.to_path_buf(),
            planning: planning_for_uid.to_string(),
            found: maps.into_iter().map(|(u, _, _)| u).collect(),
        });
    };
    let others: Vec<&(String, Matrix4<f64>, usize)> =
        maps.iter().filter(|(u, _, _)| u != planning_for_uid).collect();
    let [(room_uid, to_reg_from_room, _)] = others.as_slice() else {
        return Err(RegistrationError::RoomFrameOfReference {
            path: path.to_path_buf(),
            found: others.iter().map(|(u, _, _)| u.clone()).collect(),
        });
    };
    let to_rigid = |m: &Matrix4<f64>| {
        let r = Matrix3::from(m.fixed_view::<3, 3>(0, 0));
        RigidTransform {
            rotation: Rotation3::from_matrix(&r),
            translation_mm: m.fixed_view::<3, 1>(0, 3).into(),
        }
    };
    let planning_to_room = to_rigid(to_reg_from_room)
        .inverse()
        .compose(&to_rigid(&to_reg_from_planning));
    check_translation(path, "the planning → room map", &planning_to_room.matrix())?;
    Ok(RoomSetup {
        planning_to_room,
        planning_frame_of_reference_uid: planning_for_uid.to_string(),
        room_frame_of_reference_uid: room_uid.clone(),
    })
}

/// `Ok` when `m`'s translation is finite and within [`MAX_TRANSLATION_MM`].
fn check_translation(path: &Path, what: &str, m: &Matrix4<f64>) -> Result<(), RegistrationError> {
    let t = [m[(0, 3)], m[(1, 3)], m[(2, 3)]];
    // written so that NaN fails
    if t.iter().all(|v| v.abs() <= MAX_TRANSLATION_MM) {
        Ok(())
    } else {
        Err(RegistrationError::ImplausibleTranslation {
            path: path.to_path_buf(),
            what: what.to_string(),
            translation_mm: t,
            limit_mm: MAX_TRANSLATION_MM,
        })
    }
}

/// `Ok` when `m` is a rigid transform within [`RIGID_TOLERANCE`]; else why not.
fn check_rigid(m: &Matrix4<f64>) -> Result<(), String> {
    let last = [m[(3, 0)], m[(3, 1)], m[(3, 2)], m[(3, 3)]];
    if last != [0.0, 0.0, 0.0, 1.0] {
        return Err(format!("its last row is {last:?}, not [0, 0, 0, 1]"));
    }
    let r = Matrix3::from(m.fixed_view::<3, 3>(0, 0));
    let gram_error = (r.transpose() * r - Matrix3::identity()).abs().max();
    if gram_error > RIGID_TOLERANCE || gram_error.is_nan() {
        let scales = [0, 1, 2].map(|c| r.column(c).norm());
        return Err(format!(
            "its 3×3 part is not a rotation (column lengths {scales:?}, |MᵀM − I| up to {gram_error:.2e})"
        ));
    }
    let det = r.determinant();
    if (det - 1.0).abs() > RIGID_TOLERANCE || det.is_nan() {
        return Err(format!(
            "its 3×3 part has determinant {det:.6}: a reflection, not a rotation"
        ));
    }
    Ok(())
}

/// Identifiers a written Spatial Registration object carries.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationIds {
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Patient's Name (0010,0010).
    pub patient_name: String,
    /// Study Instance UID (the planning study's, or the in-room one's).
    pub study_instance_uid: String,
    /// Series Instance UID of the registration.
    pub series_instance_uid: String,
    /// SOP Instance UID of the registration.
    pub sop_instance_uid: String,
    /// Content Date (DA, `YYYYMMDD`).
    pub content_date: String,
    /// Content Time (TM, `HHMMSS`).
    pub content_time: String,
}

/// One Registration Sequence item: `uid`'s points into the registered Frame of Reference.
fn registration_item(uid: &str, to_registered: &RigidTransform) -> InMemDicomObject {
    let m = to_registered.matrix();
    let values: Vec<f64> = (0..4).flat_map(|r| (0..4).map(move |c| m[(r, c)])).collect();
    let mut matrix = InMemDicomObject::new_empty();
    matrix.put(ds(tags::FRAME_OF_REFERENCE_TRANSFORMATION_MATRIX, &values));
    matrix.put(text(
        tags::FRAME_OF_REFERENCE_TRANSFORMATION_MATRIX_TYPE,
        VR::CS,
        "RIGID",
    ));
    let mut matrix_reg = InMemDicomObject::new_empty();
    matrix_reg.put(sq(tags::MATRIX_SEQUENCE, vec![matrix]));
    let mut item = InMemDicomObject::new_empty();
    item.put(text(tags::FRAME_OF_REFERENCE_UID, VR::UI, uid));
    item.put(sq(tags::MATRIX_REGISTRATION_SEQUENCE, vec![matrix_reg]));
    item
}

/// Writes `setup` as a Spatial Registration object (Part 10, explicit VR little endian): the
/// planning CT's Frame of Reference is the registered one (identity item), the in-room one
/// maps into it by the inverse of `planning_to_room`.
pub fn write_room_setup_bytes(
    setup: &RoomSetup,
    ids: &RegistrationIds,
) -> Result<Vec<u8>, RegistrationError> {
    let sop_class = uids::SPATIAL_REGISTRATION_STORAGE;
    let mut o = InMemDicomObject::new_empty();
    o.put(text(tags::SOP_CLASS_UID, VR::UI, sop_class));
    o.put(text(tags::SOP_INSTANCE_UID, VR::UI, &ids.sop_instance_uid));
    o.put(text(tags::STUDY_INSTANCE_UID, VR::UI, &ids.study_instance_uid));
    o.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &ids.series_instance_uid));
    o.put(text(tags::PATIENT_NAME, VR::PN, &ids.patient_name));
    o.put(text(tags::PATIENT_ID, VR::LO, &ids.patient_id));
    o.put(text(tags::MODALITY, VR::CS, "REG"));
    o.put(text(tags::SERIES_NUMBER, VR::IS, "1"));
    o.put(text(tags::INSTANCE_NUMBER, VR::IS, "1"));
    o.put(text(tags::CONTENT_DATE, VR::DA, &ids.content_date));
    o.put(text(tags::CONTENT_TIME, VR::TM, &ids.content_time));
    o.put(text(tags::CONTENT_LABEL, VR::CS, "ROOM_SETUP"));
    o.put(text(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &setup.planning_frame_of_reference_uid,
    ));
    o.put(sq(
        tags::REGISTRATION_SEQUENCE,
        vec![
            registration_item(
                &setup.planning_frame_of_reference_uid,
                &RigidTransform::identity(),
            ),
            registration_item(
                &setup.room_frame_of_reference_uid,
                &setup.planning_to_room.inverse(),
            ),
        ],
    ));
    let meta = meta(sop_class, ids.sop_instance_uid.as_str());
    part10(o, meta, "Spatial Registration").map_err(|e| match e {
        WriteError::Meta { source, .. } => RegistrationError::Write(source.to_string()),
        WriteError::Write { source, .. } => RegistrationError::Write(source.to_string()),
        other => RegistrationError::Write(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{PointMm, VectorMm};

    fn ids() -> RegistrationIds {
        RegistrationIds {
            patient_id: "P1".into(),
            patient_name: "Test^Patient".into(),
            study_instance_uid: "1.2.3.1".into(),
            series_instance_uid: "1.2.3.2".into(),
            sop_instance_uid: "1.2.3.3".into(),
            content_date: "20261129".into(),
            content_time: "090000".into(),
        }
    }

    fn setup() -> RoomSetup {
        RoomSetup {
            planning_to_room: RigidTransform::from_xyz_deg(
                [1.0, -2.0, 3.5],
                VectorMm::new(-12.5, 180.25, -640.0),
            ),
            planning_frame_of_reference_uid: "1.2.3.100".into(),
            room_frame_of_reference_uid: "1.2.3.200".into(),
        }
    }

    #[test]
    fn written_setup_reads_back_to_the_same_map() {
        let s = setup();
        let bytes = write_room_setup_bytes(&s, &ids()).unwrap();
        let back = read_room_setup_bytes(&bytes, "mem.dcm", "1.2.3.100").unwrap();
        assert_eq!(back.room_frame_of_reference_uid, "1.2.3.200");
        for p in [PointMm::origin(), PointMm::new(100.0, -50.0, 30.0)] {
            let d = (back.planning_to_room.apply(&p) - s.planning_to_room.apply(&p)).norm();
            assert!(d < 1e-6, "{d} mm apart at {p:?}");
        }
    }

    #[test]
    fn planning_for_not_registered_names_what_is() {
        let bytes = write_room_setup_bytes(&setup(), &ids()).unwrap();
        let e = read_room_setup_bytes(&bytes, "mem.dcm", "9.9.9").unwrap_err();
        assert!(
            matches!(e, RegistrationError::PlanningNotRegistered { ref found, .. } if found.len() == 2),
            "{e}"
        );
        assert!(e.to_string().contains("1.2.3.200"), "{e}");
    }

    #[test]
    fn scaled_and_reflected_matrices_are_refused() {
        let mut scaled = Matrix4::identity();
        scaled[(0, 0)] = 1.01;
        assert!(check_rigid(&scaled).unwrap_err().contains("not a rotation"));
        let mut mirrored = Matrix4::identity();
        mirrored[(2, 2)] = -1.0;
        assert!(check_rigid(&mirrored).unwrap_err().contains("determinant"));
        let mut projective = Matrix4::identity();
        projective[(3, 0)] = 0.1;
        assert!(check_rigid(&projective).unwrap_err().contains("last row"));
        assert!(check_rigid(&setup().planning_to_room.matrix()).is_ok());
    }
}
