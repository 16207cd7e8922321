#!/usr/bin/env python3
"""ionguide's deformable registration side by side with SimpleITK's demons (issue 15).

Reads the pairs `tests/deformable_real.rs` exports (planning CT and deformed frame as
MetaImage, the region, ionguide's rigid start, the evaluation points with their true frame
positions and ionguide's TRE), runs SimpleITK's multi-resolution
FastSymmetricForcesDemonsRegistrationFilter on the same region from the same start, scores
TRE at the same points and prints one table.

    IONGUIDE_EXPORT_DEFORM_PAIRS=/tmp/sitk_pairs \
        cargo test --release --test deformable_real -- --test-threads=1
    /work/pyrp/bin/python tools/sitk_deformable_compare.py /tmp/sitk_pairs --threads 2

Needs SimpleITK (tested with 2.5.7) and numpy; not run in CI.

Direction: the fixed image is the planning CT, the moving image the frame. SimpleITK's
displacement field u is defined on the fixed grid and maps a fixed (planning) point x to
the moving (frame) point x + u(x) whose intensity it shows — the same direction as
ionguide's `map_mm` and the truth ψ. `--check` confirms it on the start transform alone
on the points: the start transform's error against the truth next to the identity's, and
the field read as x + u(x) next to x − u(x).
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def resample_iso(img, lo, hi, spacing_mm):
    """`img` on an isotropic grid over [lo, hi] (the demons smoothing is in voxels)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    size = [int(np.floor((hi[a] - lo[a]) / spacing_mm)) + 1 for a in range(3)]
    return sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, tuple(lo),
                         (spacing_mm,) * 3, (1, 0, 0, 0, 1, 0, 0, 0, 1), -1000.0, sitk.sitkFloat32)


def smooth_and_shrink(img, factor, spacing_mm):
    """Gaussian (σ = factor/2 voxels of the finest grid) then resample to factor × spacing."""
    if factor == 1:
        return img
    sm = sitk.SmoothingRecursiveGaussian(img, factor * spacing_mm / 2.0)
    size = [max(1, int(round(s / factor))) for s in img.GetSize()]
    sp = [spacing_mm * factor] * 3
    # keep the physical extent: origin moves by half the spacing change
    origin = [o + (sp[a] - spacing_mm) / 2.0 for a, o in enumerate(img.GetOrigin())]
    return sitk.Resample(sm, size, sitk.Transform(), sitk.sitkLinear, origin, sp,
                         img.GetDirection(), -1000.0, img.GetPixelID())


def run_case(case_dir, args):
    meta = json.loads((case_dir / "case.json").read_text())
    pts = np.loadtxt(case_dir / "points.csv", delimiter=",", skiprows=1)
    planning = sitk.ReadImage(str(case_dir / "planning.mha"), sitk.sitkFloat32)
    frame = sitk.ReadImage(str(case_dir / "frame.mha"), sitk.sitkFloat32)
    m = np.array(meta["start_planning_to_frame_4x4"])
    start = sitk.AffineTransform(m[:3, :3].flatten().tolist(), m[:3, 3].tolist())

    x, truth, ion_tre = pts[:, 0:3], pts[:, 3:6], pts[:, 9]
    if args.check:
        s = np.array([start.TransformPoint(p) for p in x])
        print(f"  check {case_dir.name}: start→truth {np.linalg.norm(s - truth, axis=1).mean():.2f} mm, "
              f"identity→truth {np.linalg.norm(x - truth, axis=1).mean():.2f} mm, "
              f"ionguide→truth {np.linalg.norm(pts[:, 6:9] - truth, axis=1).mean():.3f} mm")

    # ITK's demons wants fixed and moving on one grid: the frame is resampled onto the
    # planning region's grid, so the grid needs room for the field at the region's edge
    # (|w| ≤ 15 mm) — more than ionguide's pad, which samples the frame anywhere.
    pad = max(meta["pad_mm"], args.pad_mm)
    lo = np.array(meta["region_lo_mm"]) - pad
    hi = np.array(meta["region_hi_mm"]) + pad

    t0 = time.perf_counter()
    fixed = resample_iso(planning, lo, hi, args.spacing_mm)
    moving = sitk.Resample(frame, fixed, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    field = sitk.TransformToDisplacementField(start, sitk.sitkVectorFloat64, fixed.GetSize(),
                                              fixed.GetOrigin(), fixed.GetSpacing(),
                                              fixed.GetDirection())
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(args.sigma_mm / args.spacing_mm)
    demons.SetNumberOfThreads(args.threads)
    iterations = [int(v) for v in args.iterations.split(",")]
    for factor, its in zip([int(v) for v in args.shrink.split(",")], iterations):
        f = smooth_and_shrink(fixed, factor, args.spacing_mm)
        mv = smooth_and_shrink(moving, factor, args.spacing_mm)
        field = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
        demons.SetNumberOfIterations(its)
        field = demons.Execute(f, mv, field)
    tx = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    wall_s = time.perf_counter() - t0

    mapped = np.array([tx.TransformPoint(p) for p in x])
    sitk_tre = np.linalg.norm(mapped - truth, axis=1)
    if args.check:
        # the other reading of the field, x − u(x), must be the worse one
        reverse = 2.0 * x - mapped
        print(f"  check {case_dir.name}: x + u(x) → truth {sitk_tre.mean():.3f} mm, "
              f"x − u(x) → truth {np.linalg.norm(reverse - truth, axis=1).mean():.2f} mm; first points "
              + "; ".join(f"{np.round(x[i], 1)} → {np.round(mapped[i], 1)} (true {np.round(truth[i], 1)})"
                          for i in range(0, len(x), len(x) // 3)[:3]))
    return {
        "case": case_dir.name,
        "points": len(x),
        "start": "rigid" if meta["rigid_accepted"] else "identity",
        "ion_mean": ion_tre.mean(),
        "ion_p95": np.sort(ion_tre)[len(ion_tre) * 95 // 100],
        # the deformable step alone: SimpleITK gets the same start and no rigid search
        "ion_s1": meta["ionguide_time_s"]["threads_1"]["deformable"],
        "ion_s2": meta["ionguide_time_s"]["threads_2"]["deformable"],
        "ion_rigid_s2": meta["ionguide_time_s"]["threads_2"]["rigid"],
        "sitk_mean": sitk_tre.mean(),
        "sitk_p95": np.sort(sitk_tre)[len(sitk_tre) * 95 // 100],
        "sitk_s": wall_s,
        "fixed_vox": "×".join(str(v) for v in fixed.GetSize()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", type=Path, help="the IONGUIDE_EXPORT_DEFORM_PAIRS directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spacing-mm", type=float, default=1.0, help="finest isotropic grid of the fixed region")
    ap.add_argument("--sigma-mm", type=float, default=1.5, help="field smoothing σ at the finest level")
    ap.add_argument("--shrink", default="4,2,1")
    ap.add_argument("--iterations", default="100,60,30", help="per level, coarsest first")
    ap.add_argument("--pad-mm", type=float, default=20.0, help="grid margin around the region")
    ap.add_argument("--check", action="store_true", help="print the start transform's error against the truth")
    args = ap.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    rows = [run_case(d, args) for d in sorted(p for p in args.pairs.iterdir() if (p / "case.json").exists())]
    print(f"SimpleITK {sitk.Version.VersionString()} FastSymmetricForcesDemons, shrink {args.shrink}, "
          f"iterations {args.iterations}, σ {args.sigma_mm} mm, finest grid {args.spacing_mm} mm, "
          f"{args.threads} threads; host load average {os.getloadavg()[0]:.1f}")
    print("| case | start | points | ionguide TRE mean / p95 mm | ionguide deformable s, 1 / 2 threads (+ rigid) "
          f"| SimpleITK TRE mean / p95 mm | SimpleITK s ({args.threads} threads) | SimpleITK / ionguide time, {args.threads} threads |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['start']} | {r['points']} | {r['ion_mean']:.2f} / {r['ion_p95']:.2f} "
              f"| {r['ion_s1']:.2f} / {r['ion_s2']:.2f} (+{r['ion_rigid_s2']:.2f}) | {r['sitk_mean']:.2f} / {r['sitk_p95']:.2f} "
              f"| {r['sitk_s']:.1f} ({r['fixed_vox']}) | {r['sitk_s'] / (r['ion_s1'] if args.threads == 1 else r['ion_s2']):.0f}× |")


if __name__ == "__main__":
    main()
