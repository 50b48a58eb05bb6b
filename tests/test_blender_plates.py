"""Issue 26 item 5: Blender's compositor puts one of our EXR layers over a linear plate as we do.

A scene-linear Rec.709 EXR plate (OCIO's ``Linear Rec.709 (sRGB)``) with a phantom face off-centre
and highlights of 4.0 and 16.0 is exported through ``swap-export … format=exr
colorspace="Linear Rec.709 (sRGB)"`` (exact landmarks, the tiny random checkpoint: a partial
alpha, about 0.45 over the face, fading to 0 at its edge). Headless Blender
(``tests/blender/plate_comp.py``) loads the plate and the layer into Image nodes and puts the
layer over the plate with Alpha Over; its render, a float EXR, must equal
:func:`progressive_swap.export.plate_layers.composite` in the plate space within half-float
precision where the layer is partly transparent, fading out and transparent, and on the 4.0
stripe where it crosses the face (Blender keeps values above 1 and composites the premultiplied
layer as it is). Outside the layer's alpha the render is the plate. Measured with Blender 3.4.1:
bit-identical (max difference 0); our own finished frame (``comp/``, half) is within one half
step of it. The export also writes ``comp=blender``'s ``comp.blend``: its Image nodes must be in
that linear space (they used to set the plate to sRGB whatever its space) and its render must be
the same comp.

What Blender needs (its bundled OCIO config names scene-linear Rec.709 ``Linear`` in 3.x,
``Linear Rec.709`` in 4.x): both images' ``colorspace_settings.name`` set to that name (with
``sRGB`` the comp is off by up to 32), ``alpha_mode = "PREMUL"`` on the layer, Alpha Over with
``use_premultiply = False`` (on, it multiplies the premultiplied layer by alpha again: off by
up to 55 %), no Render Layers node (Blender then renders only the comp), and ``image_settings``
``OPEN_EXR`` with ``color_depth = "32"`` (``"16"`` gives the same within a half step). A float
EXR render is written in scene-linear without the view transform: Filmic instead of Standard
gave the same file, and values above 1 survive. ``PROGRESSIVE_SWAP_SKIP_BLENDER=1`` skips this
on a machine without Blender, as in ``tests/test_blender.py``.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_weights

from progressive_swap.cli import export as export_cli
from progressive_swap.export import plate_layers as PL
from progressive_swap.phantom.renderer import render, sample_identity, sample_trajectory

SCRIPT = Path(__file__).parent / "blender" / "plate_comp.py"
SPACE = "Linear Rec.709 (sRGB)"
FACE_TYPE = "whole"
PLATE = (240, 176)  # (w, h): not square, the 160 px phantom frame pasted off-centre (a flip would show)
OFFSET = (64, 10)
ARCH = dict(num_identities=2, final_res=32, start_res=16, latent_res=8, latent_channels=8,
            channel_base=256, channel_max=16, channel_min=8)


def srgb_to_linear(rgb8: np.ndarray) -> np.ndarray:
    """sRGB codes → scene-linear Rec.709 (the sRGB EOTF's inverse encoding, piecewise)."""
    v = rgb8.astype(np.float32) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def write_exr(path: Path, rgb: np.ndarray, dtype: str = "half") -> None:
    import OpenImageIO as oiio

    h, w = rgb.shape[:2]
    spec = oiio.ImageSpec(w, h, 3, dtype)
    spec.channelnames = ("R", "G", "B")
    spec.attribute("oiio:ColorSpace", SPACE)
    out = oiio.ImageOutput.create(str(path))
    assert out is not None and out.open(str(path), spec), oiio.geterror()
    assert out.write_image(np.ascontiguousarray(rgb, np.float32)), out.geterror()
    out.close()


def test_blender_composites_our_exr_layer_over_a_linear_plate_as_we_do(tmp_path, blender, capsys):
    r = render(sample_identity(3), next(iter(sample_trajectory(1, 1, fps=25))), 160)
    dx, dy = OFFSET
    plate = np.zeros((PLATE[1], PLATE[0], 3), np.float32)
    plate[..., 0] = 0.05
    plate[..., 1] = np.linspace(0.0, 0.5, PLATE[0])[None, :]  # something to see through the soft edge
    plate[..., 2] = np.linspace(0.02, 0.3, PLATE[1])[:, None]
    plate[dy:dy + 160, dx:dx + 160] = srgb_to_linear(r.image)
    lm = r.landmarks + [dx, dy]
    y = int(round(lm[30, 1]))  # the nose tip's row: across the face, its soft edge and the background
    plate[y - 4:y + 4, :] = (4.0, 4.0, 4.0)
    plate[2:14, 2:30] = (16.0, 8.0, 0.5)  # a highlight in a corner, far from the face
    seq = tmp_path / "plates"
    seq.mkdir()
    write_exr(seq / "plate.1001.exr", plate)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"fps": 25, "size": list(PLATE),
                                 "frames": [{"index": 1001, "faces": [{"landmarks": lm.tolist()}]}]}))
    (tmp_path / "ckpt").mkdir()
    ckpt = write_tiny_weights(tmp_path / "ckpt", ARCH, FACE_TYPE)
    out = tmp_path / "out"
    rc = export_cli.main([f"checkpoint={ckpt}", f"input={seq / 'plate.####.exr'}", f"out={out}", "identity=bob",
                          "progress=false", "landmarks=given", f"landmarks_file={truth}", "format=exr",
                          f"colorspace={SPACE}", "composite=true", "comp=blender"])
    assert rc == 0, capsys.readouterr().err
    layer_path = out / "layers" / "face.1001.exr"
    layer, attrs = PL.read_plate_layer(layer_path)
    assert attrs["colorspace"] == SPACE and attrs["alpha"] == "premultiplied"
    assert np.allclose(attrs["chromaticities"], PL.CHROMATICITIES[SPACE], atol=1e-6)
    assert layer.shape == (PLATE[1], PLATE[0], 4)
    plate_read, _ = PL.read_plate_layer(seq / "plate.1001.exr")  # the half values both sides composite
    np.testing.assert_array_equal(plate_read, plate.astype(np.float16).astype(np.float32))

    got_path = tmp_path / "blender.exr"
    job = {"plate": str(seq / "plate.1001.exr"), "layer": str(layer_path), "out": str(got_path),
           "report": str(tmp_path / "report.json"), "blend": str(out / "comp.blend"),
           "blend_out": str(tmp_path / "blend.exr")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    t = time.perf_counter()
    run = subprocess.run([blender, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(SCRIPT),
                          "--", str(tmp_path / "job.json")], capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t
    assert run.returncode == 0 and got_path.is_file(), (run.stdout + run.stderr)[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert all(i["colorspace"] == report["linear"] and i["is_float"] for i in report["images"].values()), report
    got, _ = PL.read_plate_layer(got_path)
    assert got.shape == (PLATE[1], PLATE[0], 3) and got.dtype == np.float32, got.shape

    ours = PL.composite(plate_read, [layer])
    a = layer[..., 3]
    clear, soft, edge = a == 0, (a > 0.02) & (a < 0.98), (a > 0) & (a <= 0.02)
    hot = plate_read[..., 0] > 1.0
    assert clear.sum() > 1000 and soft.sum() > 1000 and edge.sum() > 40, (clear.sum(), soft.sum(), edge.sum())
    assert (hot & soft).sum() > 10 and (hot & clear).sum() > 100, ((hot & soft).sum(), (hot & clear).sum())
    assert (ours[hot & soft] > 1.0).sum() > 10  # the soft edge over the 4.0 stripe composites above 1

    diff = np.abs(got - ours)
    rel = diff / np.maximum(np.abs(ours), 0.1)  # relative above 0.1, absolute (scaled) below
    finished, _ = PL.read_plate_layer(out / "comp" / "comp.1001.exr")  # our own finished frame (half)
    fin = np.abs(got - finished[..., :3]) / np.maximum(np.abs(ours), 2**-14)
    regions = {"clear": clear, "edge": edge, "soft": soft, "hot&soft": hot & soft, "hot&clear": hot & clear}
    print(f"\nBlender {report['version']} ({report['linear']}), {seconds:.1f} s; plate max {plate_read.max()}, "
          f"Blender comp max {got.max()}, ours max {ours.max()}")
    for name, m in regions.items():
        print(f"  {name:9s} {int(m.sum()):6d} px: max |diff| {diff[m].max():.3g}, max rel {rel[m].max():.3g}")
    print(f"  vs our finished frame comp/comp.1001.exr (half): max rel {fin.max():.3g}")
    assert got.max() >= 16.0 and got[hot & soft].max() > 1.0  # Blender kept values above 1
    np.testing.assert_allclose(got, ours, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got[clear], plate_read[clear], rtol=1e-6, atol=1e-7)  # the plate, untouched
    assert fin.max() <= 2**-10, fin.max()  # our finished frame: the same, within one half-float step
    # comp=blender's .blend: both images in Blender's name for the plate's linear Rec.709, the same comp
    assert report["blend"]["images"] == {"plate": report["linear"], "face layer": report["linear"]}, report["blend"]
    blend_got, _ = PL.read_plate_layer(tmp_path / "blend.exr")
    print(f"  comp.blend's render vs this script's: max |diff| {np.abs(blend_got - got).max():.3g}")
    np.testing.assert_allclose(blend_got, got, rtol=1e-6, atol=1e-7)


BLENDER_3 = frozenset({"Filmic Log", "Filmic sRGB", "Linear", "Linear ACES", "Linear ACEScg", "Non-Color", "Raw",
                       "XYZ", "sRGB"})  # Blender 3.4.1's own config (bpy's input colour spaces)
BLENDER_4 = frozenset({"ACES2065-1", "ACEScg", "AgX Log", "Filmic Log", "Linear Rec.709", "Linear Rec.2020",
                       "Non-Color", "sRGB"})  # part of 4.x's, which renamed the linear spaces


def test_comp_blender_names_a_plates_space_and_its_layers_as_blender_knows_them():
    """``comp=blender`` on a scene-referred plate: the .blend reads the plate in its own space and
    the EXR layers in the layer space, by Blender's names for them (3.x or 4.x); a space Blender's
    config lacks (ACEScct, a log plate's) is refused in one line naming it (no Blender run here)."""
    from progressive_swap.export import blender_comp as B
    from progressive_swap.footage import colour as CO

    def spaces(colorspace, known, ext=".exr"):
        c = CO.plate_colour(ext, "half" if ext == ".exr" else "uint16", colorspace=colorspace).for_layers()
        return B.comp_spaces(c, "blender", known)

    assert spaces("ACEScg", BLENDER_3) == {"plate": "Linear ACEScg", "layer": "Linear ACEScg"}
    assert spaces("ACES2065-1", BLENDER_3) == {"plate": "Linear ACES", "layer": "Linear ACES"}
    assert spaces(SPACE, BLENDER_3) == {"plate": "Linear", "layer": "Linear"}
    assert spaces("ACEScg", BLENDER_4) == {"plate": "ACEScg", "layer": "ACEScg"}
    assert spaces("Linear Rec.2020", BLENDER_4) == {"plate": "Linear Rec.2020", "layer": "Linear Rec.2020"}
    assert spaces("ACEScct", BLENDER_3 | {"ACEScct"}, ".dpx") == {"plate": "ACEScct", "layer": "Linear ACEScg"}
    for colorspace, known, ext, missing in (("ACEScct", BLENDER_3, ".dpx", "ACEScct (the plate's space)"),
                                            ("Linear Rec.2020", BLENDER_3, ".exr", "Linear Rec.2020 (the plate's")):
        with pytest.raises(ValueError, match=re.escape(missing)) as e:
            spaces(colorspace, known, ext)
        assert "\n" not in str(e.value) and "Blender needs an OCIO config with it" in str(e.value)


def test_comp_blender_on_a_log_plate_blender_cannot_read_is_one_line_before_anything_is_written(
        tmp_path, capsys, monkeypatch):
    """An ACEScct DPX plate with ``comp=blender`` and Blender 3's own config (no ACEScct): exit 2,
    one line naming the space, no out folder (Blender's spaces stand in for asking it)."""
    from progressive_swap.export import blender_comp as B
    from progressive_swap.footage import colour as CO

    monkeypatch.setenv("PROGRESSIVE_SWAP_BLENDER", sys.executable)  # "found"; never run: its spaces are given
    monkeypatch.setattr(B, "blender_spaces", lambda exe, timeout=120.0: BLENDER_3)
    c = CO.plate_colour(".dpx", "uint16")
    seq = tmp_path / "dpx"
    seq.mkdir()
    px = CO._apply(CO._processor(c.config, CO.SRGB, c.plate), np.full((32, 48, 3), 0.5, np.float32))
    import OpenImageIO as oiio

    spec = oiio.ImageSpec(48, 32, 3, "uint16")
    out_file = oiio.ImageOutput.create(str(seq / "plate.1001.dpx"))
    assert out_file.open(str(seq / "plate.1001.dpx"), spec) and out_file.write_image(px)
    out_file.close()
    (tmp_path / "ckpt").mkdir()
    ckpt = write_tiny_weights(tmp_path / "ckpt", ARCH, FACE_TYPE)
    out = tmp_path / "out"
    rc = export_cli.main([f"checkpoint={ckpt}", f"input={seq / 'plate.####.dpx'}", f"out={out}", "identity=bob",
                          "progress=false", "format=exr", "comp=blender"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    assert "comp=blender: Blender's colour config has no ACEScct (the plate's space)" in err, err
    assert not out.exists()
