"""How well a model's decoders reconstruct a sample of faces: the figures behind swap-export's
"is this footage the person the model was trained on?" check.

For faces read as identity ``k`` (encoded with ``k``'s colour statistics), every decoder ``j``
reconstructs them; inside the inner face (the mean face's brows, eyes, nose and mouth: the
same crop region for every face of a face type) we measure

* ``error[j]``: mean absolute RGB error of decoder ``j``'s reconstruction, in [0, 1];
* ``alpha[j]``: mean mask (``sigmoid`` of the mask logit) of decoder ``j``, in [0, 1];
* ``contrast``: ``error[k] / min(error[j != k])``: how much better ``k``'s own decoder does
  than the best other one (0.1-0.2 on a tiny phantom model's training faces; 1 when the
  decoders cannot tell the face from the others' people).

At the end of training :class:`~progressive_swap.train.callbacks.FinalWeights` stores these
figures for every identity's own training faces (the *reference*) in ``model.safetensors``:
a fact about the weights, measured on the faces they learnt, that travels with them (the
training face sets may be gone or moved when the model is used). swap-export measures the
footage's faces the same way and :func:`mismatch` compares. What a compositor sees when the
footage is someone else is a face the model cannot rebuild: a higher error and a
washed-out alpha; a person the model cannot tell from its other identity is the third sign.
Looks alike to the model is fine: then the swap works too.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from progressive_swap.core import align
from progressive_swap.core.landmarks import MEAN_FACE

INNER = slice(17, 68)  # iBUG-300W brows, nose, eyes and mouth: no jaw line, no background
# Flagged when any of these is passed (measured on phantom footage: docs/export.md, "Who is in the footage").
ERROR_FACTOR = 1.4  # own decoder's error over the reference error
ALPHA_DROP = 0.05  # mean alpha below the reference alpha
CONTRAST_STEP = 0.25  # fraction of the way from the reference contrast to 1 (decoders cannot tell)


def face_region(size: int, face_type: str) -> np.ndarray:
    """``(size, size)`` bool: the mean face's inner hull in an aligned crop of ``face_type``.

    Convention: crop pixel ``p = u * size - 0.5`` for the normalised crop coordinate ``u``
    (``core/align.py``).
    """
    u = align.transform_points(MEAN_FACE, align.alignment_matrix(MEAN_FACE, face_type))  # (68, 2) in [0, 1]
    pts = u[INNER] * size - 0.5
    region = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(pts.astype(np.float32)).astype(np.int32), 1)
    return region.astype(bool)


@torch.no_grad()
def decoder_fit(model: Any, faces: torch.Tensor, source: int, res: int, alpha: float, face_type: str,
                chunk: int = 8) -> dict[str, list[float]]:
    """Every decoder's reconstruction of faces of identity ``source``.

    Args:
        model: a :class:`~progressive_swap.model.autoencoder.CombAutoencoder` (``encode``, ``decode``).
        faces: ``(B, 3, res, res)`` float in [0, 1], aligned crops of ``face_type``.
        source: whose faces they are (their colour statistics normalise the input).
        res, alpha: the stage the model runs at.
        chunk: faces per forward pass (bounds the memory at large resolutions).

    Returns:
        ``{"error": [per decoder], "alpha": [per decoder]}``, means over the faces inside
        :func:`face_region`.
    """
    region = torch.from_numpy(face_region(res, face_type))
    n_dec = model.num_identities
    err_sum, alpha_sum = np.zeros(n_dec), np.zeros(n_dec)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(faces), chunk):
            x = faces[s : s + chunk].to(device).float()  # (b, 3, r, r)
            latent = model.encode(x, res, alpha, source=source)
            for j in range(n_dec):
                rgb, logit = model.decode(latent, j, res, alpha)  # (b, 3, r, r), (b, 1, r, r)
                err = (rgb.float() - x).abs().mean(1).cpu()[:, region]  # (b, P)
                a = torch.sigmoid(logit.float())[:, 0].cpu()[:, region]  # (b, P)
                err_sum[j] += float(err.mean(1).sum())
                alpha_sum[j] += float(a.mean(1).sum())
    finally:
        model.train(was_training)
    n = max(len(faces), 1)
    return {"error": [round(float(v / n), 6) for v in err_sum], "alpha": [round(float(v / n), 6) for v in alpha_sum]}


def contrast(fit: dict[str, list[float]], source: int) -> float:
    """``error[source] / min(error[j != source])`` (see the module docstring)."""
    errors = fit["error"]
    others = [e for j, e in enumerate(errors) if j != source]
    return float(errors[source] / max(min(others), 1e-6))


def reference(model: Any, faces: torch.Tensor, res: int, alpha: float, face_type: str) -> dict[str, Any]:
    """The figures of every identity on its own faces, as stored with the final weights.

    Args:
        faces: ``(N, n, 3, res, res)``: ``n`` faces of each of the ``N`` identities.
    """
    fits = [decoder_fit(model, faces[k], k, res, alpha, face_type) for k in range(len(faces))]
    return {
        "faces": int(faces.shape[1]), "res": int(res), "region": "mean face, brows to mouth (iBUG 17-67)",
        "error": [f["error"][k] for k, f in enumerate(fits)],
        "alpha": [f["alpha"][k] for k, f in enumerate(fits)],
        "contrast": [round(contrast(f, k), 6) for k, f in enumerate(fits)],
    }


def mismatch(fit: dict[str, list[float]], source: int, ref: dict[str, Any]) -> dict[str, Any]:
    """Compare the figures of footage read as identity ``source`` with that identity's reference.

    Returns:
        ``{"looks_like": bool, "reasons": [...], "error", "reference_error", "error_ratio",
        "alpha", "reference_alpha", "contrast", "reference_contrast", "contrast_step"}``;
        ``looks_like`` is False when the error exceeds :data:`ERROR_FACTOR` times the
        reference, the alpha falls :data:`ALPHA_DROP` below it, or the contrast went
        :data:`CONTRAST_STEP` of the way from the reference to 1.
    """
    e, e_ref = float(fit["error"][source]), float(ref["error"][source])
    a, a_ref = float(fit["alpha"][source]), float(ref["alpha"][source])
    c, c_ref = contrast(fit, source), float(ref["contrast"][source])
    ratio, step = e / max(e_ref, 1e-6), (c - c_ref) / max(1.0 - c_ref, 1e-6)
    reasons = []
    if ratio > ERROR_FACTOR:
        reasons.append(f"it reconstructs them {ratio:.2f}x worse than its training faces (error {e:.3f}, {e_ref:.3f})")
    if a < a_ref - ALPHA_DROP:
        reasons.append(f"mean alpha inside the face {a:.2f} ({a_ref:.2f} on its training faces)")
    if step > CONTRAST_STEP:
        reasons.append(f"its other decoders reconstruct them nearly as well (error ratio {c:.2f}, {c_ref:.2f} on "
                       "its training faces)")
    return {
        "looks_like": not reasons, "reasons": reasons,
        "error": round(e, 4), "reference_error": round(e_ref, 4), "error_ratio": round(ratio, 3),
        "alpha": round(a, 4), "reference_alpha": round(a_ref, 4),
        "contrast": round(c, 4), "reference_contrast": round(c_ref, 4), "contrast_step": round(step, 4),
    }
