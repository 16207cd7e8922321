#!/usr/bin/env python3
"""Registration truth frames made by an independent resampler (SimpleITK), not ionguide's own.

Each frame is the STS_001 planning CT moved by a known rigid motion M (planning point ->
frame point, the convention ionguide's registration results use) and resampled by
SimpleITK with linear interpolation onto a cropped slab grid around the moved tumour.

SimpleITK's Resample(image, reference, transform) evaluates output(y) = input(transform(y)),
i.e. its transform maps *output* (frame) points to *input* (planning) points. So the frame
showing the planning CT moved by M is Resample(planning, frame_grid, M^-1): then
frame(M(x)) = planning(M^-1(M(x))) = planning(x). The JSON records M (the truth a
registration must recover) and, for the record, the inverse actually handed to Resample.

Run from the repository root:  python3 tests/data/register_truth/make_fixtures.py
Needs SimpleITK and numpy; `.ci/run` does not (the outputs are committed).
"""

import gzip
import json
import math
import os

import numpy as np
import SimpleITK as sitk

ROOT = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.dirname(ROOT)
PATIENT = "STS_001"

# In-plane crop (voxels, planning spacing) and slab thickness (slices), centred on the moved
# tumour centre. 144 px ~ 141 mm covers the registration ROI (tumour bounding box + 20 mm);
# 16 of the ROI's ~43 slices keeps the overlap well above the registrar's 0.2 floor while the
# three frames stay under 2 MB gzipped.
CROP_XY = 144
SLAB_Z = 16
# Frame grids sit off the planning lattice by a fraction of a voxel so no frame voxel
# coincides with a planning voxel (as an in-room scanner's grid would not).
LATTICE_OFFSET = (0.37, 0.61, 0.5)
AIR_HU = -1000.0

# (name, rotation about x, y, z in degrees, translation in mm, rotation centre):
# "tumour" rotates about the tumour centroid, "volume" about the CT's centre, so the
# translation part of M differs from the tumour displacement in the third frame.
FRAMES = [
    ("frame_a", (0.0, 0.0, 2.0), (3.0, -2.0, 4.5), "tumour"),
    ("frame_b", (1.5, -1.0, 0.5), (-4.0, 3.5, -2.5), "tumour"),
    ("frame_c", (-1.0, 2.0, -1.5), (2.0, 5.0, 1.0), "volume"),
]


def read_planning():
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(os.path.join(DATA, PATIENT, "image")))
    return reader.Execute()


def tumour_centroid(ct):
    """Centroid (mm) of the dataset's own reference mask, as SimpleITK reads it."""
    mask = sitk.ReadImage(os.path.join(DATA, PATIENT, "mask", "GTV_Mass_CT-reference-mask.nii.gz"))
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask > 0)
    return stats.GetCentroid(1)


def motion(angles_deg, translation_mm, centre_mm):
    m = sitk.Euler3DTransform()
    m.SetCenter(centre_mm)
    m.SetRotation(*(math.radians(a) for a in angles_deg))
    m.SetTranslation(translation_mm)
    return m


def affine_of(t):
    """(3x3 row-major matrix, translation) with t(x) = A x + b about the patient origin."""
    a = np.array(t.GetMatrix()).reshape(3, 3)
    b = np.array(t.TransformPoint((0.0, 0.0, 0.0)))
    return a.tolist(), b.tolist()


def frame_grid(ct, centre_mm):
    spacing = ct.GetSpacing()
    half = [(CROP_XY - 1) / 2.0, (CROP_XY - 1) / 2.0, (SLAB_Z - 1) / 2.0]
    # axis-aligned planning CT: index offsets map straight to mm
    ci = ct.TransformPhysicalPointToContinuousIndex(centre_mm)
    start = [round(ci[a] - half[a]) + LATTICE_OFFSET[a] for a in range(3)]
    origin = ct.TransformContinuousIndexToPhysicalPoint(start)
    ref = sitk.Image([CROP_XY, CROP_XY, SLAB_Z], sitk.sitkFloat64)
    ref.SetSpacing(spacing)
    ref.SetOrigin(origin)
    ref.SetDirection(ct.GetDirection())
    return ref


def main():
    ct = sitk.Cast(read_planning(), sitk.sitkFloat64)
    centroid = tumour_centroid(ct)
    size = ct.GetSize()
    volume_centre = ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in size])
    out = {
        "generator": "tests/data/register_truth/make_fixtures.py",
        "simpleitk_version": sitk.Version_VersionString(),
        "planning_ct": f"tests/data/{PATIENT}/image",
        "tumour_centroid_mm": list(centroid),
        "convention": "motion maps planning-CT points to frame points; "
        "Resample was given its inverse (frame -> planning)",
        "interpolation": "linear",
        "default_hu": AIR_HU,
        "voxels": "little-endian int16 HU, x fastest then y then z, gzip",
        "frames": [],
    }
    for name, angles, translation, about in FRAMES:
        centre = centroid if about == "tumour" else volume_centre
        m = motion(angles, translation, centre)
        moved_centroid = m.TransformPoint(centroid)
        ref = frame_grid(ct, moved_centroid)
        inverse = m.GetInverse()
        frame = sitk.Resample(ct, ref, inverse, sitk.sitkLinear, AIR_HU, sitk.sitkFloat64)
        # round to whole HU as a scanner stores them (Resample's own cast would truncate)
        voxels = np.rint(sitk.GetArrayFromImage(frame)).clip(-32768, 32767).astype("<i2")
        path = os.path.join(ROOT, f"{name}.i16.gz")
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write(voxels.tobytes(order="C"))
        matrix, offset = affine_of(m)
        inv_matrix, inv_offset = affine_of(inverse)
        out["frames"].append(
            {
                "file": f"{name}.i16.gz",
                "dims": list(ref.GetSize()),
                "origin_mm": list(ref.GetOrigin()),
                "spacing_mm": list(ref.GetSpacing()),
                "direction": list(ref.GetDirection()),
                "motion": {
                    "euler3d_angles_deg": list(angles),
                    "euler3d_translation_mm": list(translation),
                    "euler3d_center_mm": list(centre),
                    "matrix": matrix,
                    "offset_mm": offset,
                    "rotation_angle_deg": math.degrees(
                        math.acos(max(-1.0, min(1.0, (np.trace(np.array(matrix)) - 1.0) / 2.0)))
                    ),
                },
                "moved_tumour_centroid_mm": list(moved_centroid),
                "resample_transform": {"matrix": inv_matrix, "offset_mm": inv_offset},
            }
        )
        print(name, ref.GetSize(), os.path.getsize(path), "bytes")
    with open(os.path.join(ROOT, "truth.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
