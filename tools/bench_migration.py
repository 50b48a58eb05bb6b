"""Measure ``swap-faceset import`` on the peers' own fixtures (``shared/fixtures/migration``).

For each benign fixture, imports without and with the source frame (scikit-image's astronaut)
and reports: the landmark error in our crop (their stored crop landmarks carried through their
matrix and ours, against our crop geometry of the frame landmarks), the shift and mean grey-level
difference between the import from their pixels and the re-crop from the frame, the covered
share, and the IoU of each imported mask against the stored mask warped by hand (stored mask ->
frame with the peer's own paste-back convention -> our crop). Writes ``docs/results/migration.json``.

    python tools/bench_migration.py [--fixtures ../shared/fixtures/migration] [--size 160]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from progressive_swap import faceset
from progressive_swap.core.align import crop_matrix, transform_points, warp_to_crop
from progressive_swap.faceset.migrate.containers import decode_image, jpeg_app15, png_chunks
from progressive_swap.faceset.migrate.faceswap import legacy_matrix, read_alignments
from progressive_swap.faceset.migrate.importer import import_faceset
from progressive_swap.faceset.migrate.safe_load import restricted_loads

ROOT = Path(__file__).resolve().parents[1]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max(1, (a | b).sum()))


def dfl_meta(path: Path) -> dict:
    data = path.read_bytes()
    payload = jpeg_app15(data)[0] if data[:2] == b"\xff\xd8" else png_chunks(data, {b"fcWp"})[0][1]
    return restricted_loads(payload)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "fixtures" / "migration"))
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "migration.json"))
    a = ap.parse_args()
    fixtures, size = Path(a.fixtures), a.size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = tmp / "frames"
        frames.mkdir()
        cv2.imwrite(str(frames / "astronaut.png"), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
        for folder in ("dfl", "dfl_legacy_png", "faceswap_v2.10", "faceswap_v3.0.0"):
            src = tmp / folder
            shutil.copytree(fixtures / folder, src)
            dfl = folder.startswith("dfl")
            with_frames = import_faceset(src, tmp / f"{folder}_frames", size=size, frames=frames)
            b = faceset.open(tmp / f"{folder}_frames")
            a_set = None
            if dfl:
                import_faceset(src, tmp / f"{folder}_pixels", size=size)
                a_set = faceset.open(tmp / f"{folder}_pixels")
            for i in range(len(b)):
                rec = b.record(i)
                row = {"fixture": folder, "file": rec.extra["peer_file"], "size": size,
                       "deep_check_ok": b.check(deep=True).ok if hasattr(b, "check") else None,
                       "refused": len(with_frames.refused)}
                ours_lm = b.landmarks_aligned[i] * size - 0.5
                hand: dict[str, np.ndarray] = {}
                if dfl:
                    meta = dfl_meta(src / rec.extra["peer_file"])
                    mat = np.asarray(meta["image_to_face_mat"])
                    frame_lm = cv2.invertAffineTransform(mat)
                    chain = transform_points(transform_points(np.asarray(meta["landmarks"]), frame_lm),
                                             crop_matrix(rec.matrix, size))
                    row["landmark_err_px_max"] = float(np.abs(chain - ours_lm).max())
                    j = a_set.index_of(rec.id)
                    ga = cv2.cvtColor(a_set.image(j), cv2.COLOR_RGB2GRAY).astype(np.float32)
                    gb = cv2.cvtColor(b.image(i), cv2.COLOR_RGB2GRAY).astype(np.float32)
                    (dx, dy), _ = cv2.phaseCorrelate(ga, gb)
                    row["pixels_vs_recrop_shift_px"] = float(np.hypot(dx, dy))
                    row["pixels_vs_recrop_mean_abs_diff"] = float(np.abs(ga - gb)[16:-16, 16:-16].mean())
                    row["covered"] = a_set.record(j).extra["covered"]
                    if meta.get("xseg_mask") is not None:
                        m = decode_image(meta["xseg_mask"].reshape(-1).tobytes(), gray=True).astype(np.float32) / 255
                        s = decode_image((src / rec.extra["peer_file"]).read_bytes()).shape[0]
                        crop = cv2.resize(m, (s, s), interpolation=cv2.INTER_LINEAR)
                        fr = cv2.warpAffine(crop, mat, (512, 512), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
                        hand["user_xseg"] = warp_to_crop(fr, rec.matrix, size, border=cv2.BORDER_CONSTANT)
                else:
                    face = read_alignments((src / "alignments.fsa").read_bytes())["astronaut.png"][0]
                    row["landmark_err_px_max"] = float(np.abs(
                        transform_points(np.asarray(face["landmarks_xy"], float), crop_matrix(rec.matrix, size))
                        - ours_lm).max())
                    lin = np.asarray(face["mask"]["components"]["affine_matrix"])[:2, :2]
                    row["mean_face_fit_vs_stored_mask_matrix_rel_err"] = float(
                        np.abs(legacy_matrix(np.asarray(face["landmarks_xy"], float))[:, :2] * 64 - lin).max()
                        / np.abs(lin).max())
                    for name, mk in face["mask"].items():
                        st = mk["stored_size"]
                        m = np.frombuffer(zlib.decompress(mk["mask"]), np.uint8).reshape(st, st) / np.float32(255)
                        fr = cv2.warpAffine(m, np.asarray(mk["affine_matrix"])[:2], (512, 512),
                                            flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
                        hand[f"user_fs_{name}"] = warp_to_crop(fr, rec.matrix, size, border=cv2.BORDER_CONSTANT)
                row["mask_iou"] = {k: round(iou(b.mask(i, k), v), 4) for k, v in hand.items()}
                rows.append(row)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
