"""Swap quality against the phantom's ground truth.

For a checkpoint trained on phantom identities, render *held-out frames* (frame seeds never used
in training) of every trained identity, swap them, and compare with the **true swap**: the other
identity rendered with the same pose, expression, lighting and background.

Metrics (see :mod:`progressive_swap.core.metrics`):
    * swap fidelity: PSNR/SSIM of A→B against the true swap inside B's visible-face mask, in
      aligned space and, after un-warping and compositing over A's plate, in frame space (with
      the export's default alpha, A's own decoder's mask, and with the swapped decoder's mask);
      and the IoU of either mask with B's visible-face mask;
    * reconstruction: A→A against the input;
    * detail: the share of the truth's high-frequency energy (above the previous stage's
      Nyquist) that the swap reproduces, in a central face patch;
    * temporal stability: flicker of the composited swap on a phantom video, with landmarks
      disturbed by noise, raw and smoothed, against the truth's own flicker.

Two reference points on the same frames calibrate the swap numbers (``baseline_*``): the
source face recoloured to the target identity by a per-channel colour transfer (no learning:
the source's features and shape, the target's average colours), and the truth itself blurred
by a Gaussian of ``res / 32`` px (the right face without its detail).

Identity (what a swap transfers beyond colour), from the same frames:
    * ``identity_gain_db``: swap PSNR minus the recoloured source's, frame by frame. 0 means the
      swap is worth no more than recolouring A's face; the truth scores its PSNR cap
      (:data:`PSNR_CAP`) minus the recoloured source's.
    * ``swap_recon_gap_db``: reconstruction PSNR minus swap PSNR. A gap that grows with training
      while the gain stalls is identity leaking through the shared latent.
    * ``shape_score``: IoU of the swap's mask with B's visible face minus its IoU with A's. The
      truth scores ``shape_score_truth`` = 1 − IoU(A, B) (B's outline exactly), a swap that
      keeps A's outline scores its negative; ``shape_transfer`` is their ratio (1: B's shape,
      −1: A's), averaged over frames whose outlines differ at all.
    * ``feature_transfer``: whose *features* the swap draws, whatever its sharpness or colour. The
      luminance of the swap, of B's truth and of A's own face is band-passed (a difference of
      Gaussians, σ = ``res / 128`` and ``res / 16``: the eyes', nose's and mouth's shapes, not
      fine detail or shading) and correlated inside both visible faces;
      ``(corr(swap, B) − corr(swap, A)) / (1 − corr(A, B))`` is 1 for B's features (the truth,
      and the truth blurred), −1 for A's (the source, recoloured or not) and about 0 for a face
      that has neither (a blurred average face), where PSNR rewards the blur. Frames whose two
      faces' features correlate above 0.95 are left out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from progressive_swap.core import align
from progressive_swap.core.metrics import flicker, high_frequency_kept, mask_iou, masked_psnr, masked_ssim
from progressive_swap.export.composite import SwappedFace, face_layer, over
from progressive_swap.export.swapper import Swapper, load_model
from progressive_swap.extract.smoothing import smooth_track
from progressive_swap.phantom import renderer as phantom

PSNR_CAP = 60.0  # dB: identical images score this rather than infinity, so means stay finite
HELD_OUT_STREAM = 7919  # frame seeds (seed, HELD_OUT_STREAM, identity, n): never used by the data set writer


@dataclass
class QualitySettings:
    """What to evaluate.

    Attributes:
        frames: held-out frames per ordered identity pair.
        phantom_seed: the ``seed`` the training phantom was generated with (identity k has
            ``sample_identity(seed * 1000 + k)``).
        occluders: occluder probability of the held-out frames.
        video_frames: length of the temporal-stability video (0 skips it).
        noise_px: landmark noise σ, in pixels of a 256 px face, for the temporal test.
    """

    frames: int = 8
    phantom_seed: int = 0
    occluders: float = 0.0
    video_frames: int = 24
    noise_px: float = 1.5


def identity_scores(swap: np.ndarray, swap_mask: np.ndarray, truth: np.ndarray, recoloured: np.ndarray,
                    vis_a: np.ndarray, vis_b: np.ndarray, source: np.ndarray | None = None) -> dict[str, float]:
    """One frame's identity measures (see the module docstring): all images ``(H, W, 3)`` in
    [0, 1] aligned to A's crop, masks ``(H, W)`` in [0, 1]; ``source`` is A's own face (default:
    ``recoloured``, whose features are A's).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> truth, src = rng.random((2, 8, 8, 3))
        >>> vis = np.ones((8, 8))
        >>> float(identity_scores(src, vis, truth, src, vis, vis)["identity_gain_db"])
        0.0
    """
    source = recoloured if source is None else source
    swap_psnr = min(masked_psnr(swap, truth, vis_b), PSNR_CAP)
    ref_psnr = min(masked_psnr(recoloured, truth, vis_b), PSNR_CAP)
    to_b, to_a = mask_iou(swap_mask, vis_b), mask_iou(swap_mask, vis_a)
    truth_gap = 1.0 - mask_iou(vis_a, vis_b)
    return {
        "identity_gain_db": swap_psnr - ref_psnr,
        "shape_score": to_b - to_a,
        "shape_score_truth": truth_gap,
        "shape_transfer": (to_b - to_a) / truth_gap if truth_gap > 1e-3 else float("nan"),
        "feature_transfer": feature_transfer(swap, truth, source, np.minimum(vis_a, vis_b)),
    }


def _features(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Band-passed luminance inside ``mask`` (> 0.5), zero mean and unit norm there."""
    side = img.shape[0]
    y = np.asarray(img, np.float32) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    band = cv2.GaussianBlur(y, (0, 0), side / 128) - cv2.GaussianBlur(y, (0, 0), side / 16)
    v = band[mask > 0.5]
    v = v - v.mean()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-8 else v * 0.0


def feature_transfer(swap: np.ndarray, truth: np.ndarray, source: np.ndarray, mask: np.ndarray) -> float:
    """Whose features the swap draws (module docstring): 1 B's (``truth``), −1 A's (``source``),
    about 0 neither; NaN where the two faces' features are too alike to tell apart (> 0.95) or the
    mask holds under 64 pixels.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.random((2, 64, 64, 3)).astype(np.float32)
        >>> m = np.ones((64, 64), np.float32)
        >>> round(feature_transfer(b, b, a, m), 6), round(feature_transfer(a * 0.5 + 0.2, b, a, m), 6)
        (1.0, -1.0)
    """
    if (mask > 0.5).sum() < 64:
        return float("nan")
    fs, fb, fa = (_features(x, mask) for x in (swap, truth, source))
    ab = float(fa @ fb)
    if ab > 0.95:
        return float("nan")
    return (float(fs @ fb) - float(fs @ fa)) / (1.0 - ab)


def colour_matched(swap: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A swap recoloured from the source identity's average colours to the target's (``(2, 3)``
    mean and deviation each), the transfer the recoloured-source reference applies to the source.
    For designs that learn no colour normalisation: the peers' networks keep the footage's skin
    tone and leave colour to their converters, so ``swap_psnr_colour_matched`` compares what they
    transfer beyond colour on the reference's own terms. A model with ``colour_norm`` already paints
    the target's colours, and its swap is scored as it is."""
    return np.clip((swap - source[0]) / source[1] * target[1] + target[0], 0, 1).astype(np.float32)


def phantom_index(name: str) -> int:
    m = re.fullmatch(r"id(\d+)", name)
    if not m:
        raise ValueError(f"identity {name!r} is not a phantom identity (expected id<k>)")
    return int(m.group(1))


def _to01(img: np.ndarray) -> np.ndarray:
    return np.asarray(img, np.float32) / 255.0


def evaluate(checkpoint: str, settings: QualitySettings = QualitySettings(), device: str = "cpu") -> dict[str, Any]:
    """Evaluate one checkpoint. Returns a JSON-able dict (and ``samples`` of images for reports)."""
    model, info = load_model(checkpoint, device)
    res, alpha, face_type = info.stage_res, info.alpha, info.face_type or "whole"
    names = info.identities
    idents = [phantom.sample_identity(settings.phantom_seed * 1000 + phantom_index(n)) for n in names]
    frame_px = 2 * res  # the phantom data set's framing: a face crop of about ``res`` px
    # (decoder, source identity) -> Swapper: a swap A→B encodes A's face as A's.
    swappers = {
        (k, j): Swapper(model, k, res, alpha, device, source=j) for k in range(len(names)) for j in range(len(names))
    }
    start = min(model.stages)
    # Nyquist of the previous stage, cycles per side; a network built for one side only (the peers'
    # designs, eval/peers.py, or a comb trained at one side) is measured above the same cutoff as a
    # grown one at its side
    cutoff = res / 4 if res > start or len(model.stages) == 1 else None

    keys = (
        "swap_psnr",
        "swap_ssim",
        "source_mask_iou",
        "swap_mask_iou",
        "frame_psnr",
        "frame_psnr_swap_mask",
        "recon_psnr",
        "recon_ssim",
        "hf_energy",
        "hf_coherent",
        "baseline_colour_transfer_psnr",
        "baseline_blurred_truth_psnr",
        "identity_gain_db",
        "swap_psnr_colour_matched",
        "identity_gain_colour_matched_db",
        "shape_score",
        "shape_score_truth",
        "shape_transfer",
        "feature_transfer",
        "baseline_colour_transfer_feature_transfer",
        "baseline_blurred_truth_feature_transfer",
    )
    rows: dict[str, list[float]] = {k: [] for k in keys}
    colour = identity_colour(model, idents, res, face_type, settings)  # (N, 2, 3) mean, std
    samples = []
    for a in range(len(names)):
        for b in range(len(names)):
            if a == b:
                continue
            for n in range(settings.frames):
                f = phantom.sample_frame((settings.phantom_seed, HELD_OUT_STREAM, a, n), occluders=settings.occluders)
                ra, rb = phantom.render(idents[a], f, frame_px), phantom.render(idents[b], f, frame_px)
                m = align.alignment_matrix(ra.landmarks, face_type)
                src = align.warp_to_crop(ra.image, m, res)
                src01 = _to01(src)
                truth = _to01(align.warp_to_crop(rb.image, m, res))
                vis_b = align.warp_to_crop(rb.visible_mask, m, res)
                vis_a = align.warp_to_crop(ra.visible_mask, m, res)
                rgb, mask = (x[0] for x in swappers[b, a](src[None]))
                rows["swap_psnr"].append(masked_psnr(rgb, truth, vis_b))
                rows["swap_mask_iou"].append(mask_iou(mask, vis_b))
                recoloured = np.clip((src01 - colour[a, 0]) / colour[a, 1] * colour[b, 1] + colour[b, 0], 0, 1)
                rows["baseline_colour_transfer_psnr"].append(masked_psnr(recoloured, truth, vis_b))
                for key, v in identity_scores(rgb, mask, truth, recoloured, vis_a, vis_b, src01).items():
                    rows[key].append(v)
                matched = rgb if getattr(model, "colour_norm", False) else colour_matched(rgb, colour[a], colour[b])
                rows["swap_psnr_colour_matched"].append(masked_psnr(matched, truth, vis_b))
                rows["identity_gain_colour_matched_db"].append(
                    min(rows["swap_psnr_colour_matched"][-1], PSNR_CAP) - min(rows["baseline_colour_transfer_psnr"][-1],
                                                                              PSNR_CAP))
                blurred = cv2.GaussianBlur(truth, (0, 0), res / 32)
                rows["baseline_blurred_truth_psnr"].append(masked_psnr(blurred, truth, vis_b))
                both = np.minimum(vis_a, vis_b)
                rows["baseline_colour_transfer_feature_transfer"].append(
                    feature_transfer(recoloured, truth, src01, both))
                rows["baseline_blurred_truth_feature_transfer"].append(
                    feature_transfer(blurred, truth, src01, both))
                rows["swap_ssim"].append(masked_ssim(rgb, truth, vis_b))
                rec, own_mask = (x[0] for x in swappers[a, a](src[None]))  # A's decoder: the export's default alpha
                rows["source_mask_iou"].append(mask_iou(own_mask, vis_b))
                rows["recon_psnr"].append(masked_psnr(rec, src01, vis_a))
                rows["recon_ssim"].append(masked_ssim(rec, src01, vis_a))
                for key, alpha_mask in (("frame_psnr", own_mask), ("frame_psnr_swap_mask", mask)):
                    comp = over(face_layer(SwappedFace(rgb, alpha_mask, m), (frame_px, frame_px)), _to01(ra.image))
                    rows[key].append(masked_psnr(comp, _to01(rb.image), rb.visible_mask))
                if cutoff:
                    c = slice(res // 4, 3 * res // 4)  # central face patch: cheeks, nose, eyes
                    kept = high_frequency_kept(rgb[c, c], truth[c, c], cutoff / 2)  # patch is half the side
                    rows["hf_energy"].append(kept["energy"])
                    rows["hf_coherent"].append(kept["coherent"])
                if n == 0:
                    samples.append(
                        {
                            "pair": f"{names[a]}>{names[b]}",
                            "truth": truth,
                            "swap": rgb,
                            "error": np.abs(rgb - truth).mean(-1) * vis_b,
                        }
                    )
    out: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "stage_res": res,
        "alpha": alpha,
        "face_type": face_type,
        "identities": names,
        "frames_per_pair": settings.frames,
        **{k: (float(np.nanmean(v)) if np.isfinite(v).any() else None) for k, v in rows.items()},
    }
    if out["recon_psnr"] is not None and out["swap_psnr"] is not None:
        out["swap_recon_gap_db"] = out["recon_psnr"] - out["swap_psnr"]
    if settings.video_frames >= 2:
        out["temporal"] = temporal(model, idents, names, res, alpha, face_type, settings, device)
    out["samples"] = samples
    return out


def identity_colour(model: Any, idents: list, res: int, face_type: str, s: QualitySettings) -> np.ndarray:
    """Each identity's RGB mean and deviation inside the face, ``(N, 2, 3)``: the model's own
    statistics when it was trained with ``colour_norm``, else measured on 16 frames outside the held-out stream."""
    if getattr(model, "colour_norm", False):
        return model.identity_colour.detach().cpu().double().numpy()
    out = []
    for k, ident in enumerate(idents):
        renders = (phantom.render(ident, phantom.sample_frame((s.phantom_seed, 0, k, n)), 2 * res) for n in range(16))
        out.append(face_colour([(r.image, r.landmarks, r.visible_mask) for r in renders], face_type, res))
    return np.asarray(out, np.float64)


def face_colour(frames: list, face_type: str, res: int) -> np.ndarray:
    """RGB mean and deviation (at least 0.01) of uint8 ``(image, landmarks, visible_mask)`` frames
    inside their visible faces, aligned at ``res``: ``(2, 3)`` in [0, 1], what the recoloured-source
    reference maps one identity's colours from or to."""
    px = []
    for image, landmarks, visible in frames:
        m = align.alignment_matrix(landmarks, face_type)
        px.append(_to01(align.warp_to_crop(image, m, res))[align.warp_to_crop(visible, m, res) > 0.5])
    px = np.concatenate(px)
    return np.asarray([px.mean(0), np.maximum(px.std(0), 1e-2)], np.float64)


def temporal(
    model: Any,
    idents: list,
    names: list[str],
    res: int,
    alpha: float,
    face_type: str,
    s: QualitySettings,
    device: str = "cpu",
) -> dict[str, float]:
    """Flicker of the composited swap id0→id1 on a phantom video (the export's default alpha: the
    source identity's own mask): noisy vs smoothed vs exact landmarks, and the truth's own."""
    swap = Swapper(model, 1, res, alpha, device, source=0, mask_from="source")
    fps = 24.0
    frame_px = 2 * res
    traj = phantom.sample_trajectory((s.phantom_seed * 1000 + 1) * 100 + 77, s.video_frames, fps)
    ra = [phantom.render(idents[0], f, frame_px) for f in traj]
    rb = [phantom.render(idents[1], f, frame_px) for f in traj]
    truth_lm = np.stack([r.landmarks for r in ra])
    scale = align.face_size(align.alignment_matrix(truth_lm[0], "full")) / 256.0
    noisy = truth_lm + np.random.default_rng(s.phantom_seed).normal(0, s.noise_px * scale, truth_lm.shape)
    smooth = smooth_track(noisy, fps, "savgol")
    result = {"truth": flicker([_to01(r.image) for r in rb], [r.visible_mask for r in rb])}
    for label, lms in (("noisy", noisy), ("smoothed", smooth), ("exact", truth_lm)):
        comps = []
        for r, lm in zip(ra, lms):
            m = align.alignment_matrix(lm, face_type)
            rgb, mask = (x[0] for x in swap(align.warp_to_crop(r.image, m, res)[None]))
            comps.append(over(face_layer(SwappedFace(rgb, mask, m), (frame_px, frame_px)), _to01(r.image)))
        result[label] = flicker(comps, [r.visible_mask for r in rb])
    return result
