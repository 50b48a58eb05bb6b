"""A plate's colour space comes from the file first: EXR chromaticities, a stated colour space, then
``colorspace=``, then the file type (``footage/colour.py``, ``docs/plates.md``).

Tiny EXRs written with OpenImageIO in the test; nothing runs a detector or a network.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("OpenImageIO")
pytest.importorskip("PyOpenColorIO")

from progressive_swap.cli import extract as extract_cli  # noqa: E402
from progressive_swap.export import plate_layers as PL  # noqa: E402
from progressive_swap.footage import colour as C  # noqa: E402
from progressive_swap.footage.sources import open_source  # noqa: E402


def write_exr(path, chromaticities=None, colorspace: str = "") -> None:
    import OpenImageIO as oiio

    spec = oiio.ImageSpec(8, 8, 3, "half")
    if chromaticities is not None:
        spec.attribute("chromaticities", oiio.TypeDesc("float[8]"), tuple(chromaticities))
    if colorspace:
        spec.attribute("oiio:ColorSpace", colorspace)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), oiio.geterror()
    out.write_image(np.full((8, 8, 3), 0.18, np.float32))
    out.close()


def sequence(tmp_path, name: str, **kw):
    seq = tmp_path / name
    seq.mkdir()
    for n in (1001, 1002):
        write_exr(seq / f"plate.{n}.exr", **kw)
    return seq / "plate.####.exr"


def test_an_ap0_exr_is_read_as_aces2065_1_without_being_told(tmp_path):
    src = open_source(sequence(tmp_path, "ap0", chromaticities=C.PRIMARIES["AP0"]))
    assert src.colour.plate == "ACES2065-1" and "chromaticities are AP0" in src.colour.reason
    assert src.colour.line() == "colour ACES2065-1 (its EXR chromaticities are AP0)"
    # half-float rounding of the stored xy still matches; Rec.709 primaries are linear Rec.709
    rec709 = np.asarray(C.PRIMARIES["Rec.709"], np.float16).astype(float)
    assert open_source(sequence(tmp_path, "709", chromaticities=rec709)).colour.plate == "Linear Rec.709 (sRGB)"
    # a stated colour space (OpenImageIO stores it as the colorInteropID) names the space too
    assert open_source(sequence(tmp_path, "stated", colorspace="ACEScct")).colour.plate == "ACEScct"
    # an EXR that says nothing keeps the documented default, and the first line says why
    plain = open_source(sequence(tmp_path, "plain")).colour
    assert plain.plate == "ACEScg" and plain.reason == "the default for .exr files, the config's scene_linear"
    # the file's primaries with another encoding is no contradiction: ACEScct for an AP1 file
    ap1 = sequence(tmp_path, "ap1", chromaticities=C.PRIMARIES["AP1"])
    assert open_source(ap1).colour.plate == "ACEScg"
    assert open_source(ap1, colorspace="ACEScct").colour.plate == "ACEScct"


def test_a_colorspace_that_contradicts_the_file_is_refused_in_one_line(tmp_path, capsys):
    pattern = sequence(tmp_path, "ap0", chromaticities=C.PRIMARIES["AP0"])
    rc = extract_cli.main([f"input={pattern}", f"out={tmp_path / 'set'}", "colorspace=ACEScg", "progress=false"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    assert "colorspace=ACEScg contradicts plate.1001.exr: its EXR chromaticities are AP0, so it is ACES2065-1" in err
    assert "colorspace_check=false" in err and not (tmp_path / "set").exists()
    forced = open_source(pattern, colorspace="ACEScg", colorspace_check=False).colour
    assert forced.plate == "ACEScg" and "overriding the file's ACES2065-1" in forced.reason


def test_layers_of_an_ap0_plate_carry_ap0_chromaticities(tmp_path):
    from progressive_swap.export.frames import FrameIn

    src = open_source(sequence(tmp_path, "ap0", chromaticities=C.PRIMARIES["AP0"]))
    fr = next(src.frames())
    frame = FrameIn(fr.index, fr.time, fr.image, [], fr.plate, fr.info, src.colour)
    layer = np.zeros((8, 8, 4), np.float32)
    layer[2:6, 2:6] = [0.1, 0.2, 0.3, 1.0]
    PL.encode_plate_exr(tmp_path / "face.1001.exr", layer, frame, {})
    _, attrs = PL.read_plate_layer(tmp_path / "face.1001.exr")
    assert np.allclose(attrs["chromaticities"], C.PRIMARIES["AP0"], atol=1e-6)
    assert attrs["colorspace"] == "ACES2065-1"
    # and the layer, read as a plate, is ACES2065-1 again
    assert open_source(tmp_path / "face.1001.exr").colour.plate == "ACES2065-1"


@pytest.mark.parametrize("space", ["ARRI LogC3 (EI800)", "ARRI LogC4", "S-Log3 S-Gamut3", "ADX10"])
def test_camera_log_dpx_plates_read_through_ocios_studio_config(tmp_path, space):
    """Codes made by OCIO itself from known ACES2065-1 values, stored as 16-bit DPX, come back
    through ``ocio=studio colorspace=…`` within a half-float step (the DPX's 16-bit codes)."""
    import OpenImageIO as oiio

    studio = C.config_source("studio")
    assert studio == "ocio://studio-config-latest"
    aces = np.array([[[0.01, 0.01, 0.01], [0.18, 0.18, 0.18], [0.9, 0.5, 0.2], [4.0, 3.0, 2.0]]], np.float32)
    codes = C._apply(C._processor(studio, "ACES2065-1", space), aces)
    spec = oiio.ImageSpec(4, 1, 3, "uint16")
    path = tmp_path / "plate.1001.dpx"
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), oiio.geterror()
    out.write_image(codes)
    out.close()
    src = open_source(path, colorspace=space, ocio="studio")
    assert src.colour.plate == space and src.colour.scene and src.colour.config == studio
    back = C._apply(C._processor(studio, space, "ACES2065-1"), next(src.frames()).plate)
    np.testing.assert_allclose(back, aces, rtol=2**-10)
    # the CG config has no camera spaces: one line that names the config
    with pytest.raises(ValueError, match="is not in the OCIO config"):
        open_source(path, colorspace=space)


def test_resuming_an_extraction_that_read_the_plates_in_another_space_is_refused(tmp_path):
    """An extraction begun by a version that read every EXR as ACEScg (its manifest records no
    plate space) must not be resumed on an AP0 plate, which is now read as ACES2065-1; one begun on
    a plate that says nothing, or recorded in the same space, resumes."""
    from progressive_swap.extract.options import ExtractError, ExtractOptions
    from progressive_swap.extract.pipeline import check_resumed_colour

    ap0 = open_source(sequence(tmp_path, "ap0", chromaticities=C.PRIMARIES["AP0"]))
    plain = open_source(sequence(tmp_path, "plain"))
    opt = ExtractOptions(input="x", out=str(tmp_path / "set"))
    old = {"input": {}, "options": {}}  # a manifest from before plate spaces were recorded
    with pytest.raises(ExtractError, match=r"read it as ACEScg \(by a version that took .* file type alone\), "
                                           r"but it is ACES2065-1 \(its EXR chromaticities are AP0\)"):
        check_resumed_colour(old, ap0, opt, tmp_path / "work")
    check_resumed_colour(old, plain, opt, tmp_path / "work")  # read as ACEScg then and now
    check_resumed_colour({**old, "plate_space": "ACES2065-1"}, ap0, opt, tmp_path / "work")
    with pytest.raises(ExtractError, match="read it as ACEScg, but it is ACES2065-1"):
        check_resumed_colour({**old, "plate_space": "ACEScg"}, ap0, opt, tmp_path / "work")
    # colorspace= named then as now: the options check compares it, the file type played no part
    named = ExtractOptions(input="x", out=str(tmp_path / "set"), colorspace="ACES2065-1")
    check_resumed_colour(old, ap0, named, tmp_path / "work")


def test_a_film_scan_dpx_names_its_transfer_and_how_to_read_it(tmp_path):
    """A DPX whose header says printing density (a Cineon-style scan) is read in the default log
    space, and the first line says what the header said and which space reads it as a scan."""
    import OpenImageIO as oiio

    spec = oiio.ImageSpec(4, 2, 3, "uint16")
    spec.attribute("dpx:Transfer", "Printing density")
    path = tmp_path / "scan.1001.dpx"
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), oiio.geterror()
    out.write_image(np.full((2, 4, 3), 0.5, np.float32))
    out.close()
    colour = open_source(path).colour
    assert colour.plate == "ACEScct"  # the CG config's compositing_log
    assert "its DPX transfer is 'Printing density'" in colour.reason and "colorspace=ADX10" in colour.reason
