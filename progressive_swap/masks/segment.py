"""Occlusion-aware face masks: train a BiSeNet on face sets, apply it, import painted masks.

* **Training** (:func:`train_segmenter`) reads face crops and a ground-truth mask kind from face
  sets (the phantom's ``visible`` = face minus occluders; a user's painted ``user_<kind>``
  mask wins over the automatic one). Augmentation is albumentations plus random occluders
  pasted over the face (:func:`paste_occluder`), which also cut the target mask. The loss is
  smp's Dice plus BCE (or focal) on the main head and, down-weighted, on the two auxiliary
  heads. IoU is measured on held-out faces at their native resolution.
* **Applying** (:func:`apply_to_faceset`) writes soft masks at each crop's native resolution
  (16-bit PNG, lossless). It never writes a ``user_*`` mask; painted masks are combined in
  by union or subtraction rules. :func:`apply_hulls` writes the extractor's landmark hull masks
  into a face set made without them.

Convention: images uint8 ``(S, S, 3)`` RGB at numpy boundaries, float ``(B, 3, H, W)`` in
``[0, 1]`` in torch; masks float32 in ``[0, 1]``, 1 = visible face.
"""
from __future__ import annotations

from progressive_swap.masks.occluders import paste_occluder, paste_occluder_alpha
from progressive_swap.masks.segment_apply import (
    apply_hulls,
    apply_to_faceset,
    combine_masks,
    import_user_masks,
    read_mask_png,
)
from progressive_swap.masks.segment_data import (
    Face,
    MaskDataset,
    NoMasksError,
    build_augment,
    faces_with_mask,
    split_faces,
)
from progressive_swap.masks.segment_train import (
    TrainResult,
    evaluate,
    lr_factor,
    predict_masks,
    segmentation_loss,
    train_segmenter,
)

__all__ = [
    "paste_occluder",
    "paste_occluder_alpha",
    "Face",
    "NoMasksError",
    "faces_with_mask",
    "split_faces",
    "build_augment",
    "MaskDataset",
    "segmentation_loss",
    "predict_masks",
    "evaluate",
    "lr_factor",
    "TrainResult",
    "train_segmenter",
    "combine_masks",
    "apply_to_faceset",
    "apply_hulls",
    "read_mask_png",
    "import_user_masks",
]
