"""``swap-export … comp=blender``: a Blender file with the comp already wired.

This module is two things in one file:

* :func:`write_blend` (run by the export, in this package's Python) describes the job as JSON and
  runs headless Blender (``blender -b --factory-startup --python THIS_FILE -- JOB.json``);
* :func:`build` (run inside Blender, which has only ``bpy`` and the standard library, never this
  package) builds the scene from that JSON and saves the ``.blend``.

The scene: the plate (a movie, a numbered image sequence or one image, sRGB) and the layer
sequence (EXR: scene-linear, premultiplied; PNG: sRGB, straight) feed an Alpha Over node whose
result goes to the Composite and Viewer nodes. A scene-referred plate (EXR, DPX, float TIFF) and
its EXR layers are read in their own spaces (the plate's, and the layer space: ACEScg for a log
plate), named as Blender's OCIO config names them (:func:`comp_spaces`: ``Linear ACEScg`` in
Blender 3.x, ``ACEScg`` in 4.x, ...); a space that config lacks is refused before anything is
written. Scene frames run ``0 … N-1``: the plate's and the
layers' first files (``face.000000.exr`` for video, ``face.1001.exr`` for ``plate.1001.exr``)
sit at scene frame 0 through each node's frame offset; the resolution and frame rate are the plate's, and the
view transform is Standard (display sRGB, look None), so a render gives the plate's own colours
back where the layer is transparent. Renders go to ``//render/comp.######.png``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from progressive_swap.footage.colour import LINEAR_SPACES
except ImportError:  # inside Blender, which runs this file as a script without this package (build only)
    LINEAR_SPACES = {}

BLEND_NAME = "comp.blend"
NO_BLENDER = "comp=blender needs Blender, not found (apt-get install blender, or PROGRESSIVE_SWAP_BLENDER=PATH)"


def find_blender() -> str | None:
    """The Blender executable: ``$PROGRESSIVE_SWAP_BLENDER`` or ``blender`` on the PATH, else None."""
    given = os.environ.get("PROGRESSIVE_SWAP_BLENDER")
    if given:
        return given if Path(given).is_file() else None
    return shutil.which("blender")


# Blender's own configs' names for the scene-linear spaces, by primaries: 4.x, its later
# renames, then 3.x (``Linear`` is 3.x's scene-linear Rec.709; 3.x has no Rec.2020 or P3 space).
BLENDER_LINEAR = {
    "Rec.709": ("Linear Rec.709", "Linear BT.709 I-D65", "Linear"),
    "AP0": ("ACES2065-1", "Linear ACES"),
    "AP1": ("ACEScg", "Linear ACEScg"),
    "Rec.2020": ("Linear Rec.2020", "Linear BT.2020 I-D65"),
    "P3-D65": ("Linear P3-D65", "Linear DCI-P3 D65", "Linear DCI-P3 I-D65"),
}
SPACES_TAG = "progressive_swap blender spaces: "
_SPACES_EXPR = (
    "import bpy, json; print(" + repr(SPACES_TAG) + " + json.dumps(sorted(i.identifier for i in "
    "bpy.types.ColorManagedInputColorspaceSettings.bl_rna.properties['name'].enum_items)))"
)
_known_spaces: dict[str, frozenset[str]] = {}


def blender_spaces(blender: str, timeout: float = 120.0) -> frozenset[str]:
    """The input colour spaces Blender offers (its bundled OCIO config, or the one ``$OCIO`` names),
    asked of Blender itself once per executable.

    Raises:
        RuntimeError: Blender failed or printed no list (its last lines of output).
    """
    if blender not in _known_spaces:
        r = subprocess.run([blender, "-b", "--factory-startup", "--python-exit-code", "1", "--python-expr",
                            _SPACES_EXPR], capture_output=True, text=True, timeout=timeout)
        lines = [ln[len(SPACES_TAG):] for ln in r.stdout.splitlines() if ln.startswith(SPACES_TAG)]
        if r.returncode != 0 or not lines:
            tail = " | ".join((r.stdout + r.stderr).strip().splitlines()[-3:])
            raise RuntimeError(f"Blender could not list its colour spaces (exit {r.returncode}): {tail}")
        _known_spaces[blender] = frozenset(json.loads(lines[-1]))
    return _known_spaces[blender]


def blender_names(space: str) -> tuple[str, ...]:
    """The names Blender's config may give ``space`` (a name in this project's OCIO config), the
    space's own name first: a scene-linear space of known primaries also under its other names
    (ACES 1.x configs, interop ids) and Blender's own (:data:`BLENDER_LINEAR`); any other space
    (a log or camera space such as ACEScct) only under its own name, as in a config given Blender
    with ``$OCIO``."""
    for primaries, names in LINEAR_SPACES.items():
        if space in names:
            return tuple(dict.fromkeys((space, *names, *BLENDER_LINEAR[primaries])))
    return (space,)


def comp_spaces(colour, blender: str, known: frozenset[str] | None = None) -> dict[str, str]:
    """Blender's names for a scene-referred plate's space and its EXR layers' (the layer space).

    Args:
        colour: the plate's :class:`~progressive_swap.footage.colour.PlateColour`, its layer
            space set (``for_layers``).
        blender: the executable (asked for its spaces: :func:`blender_spaces`).
        known: Blender's spaces, if already known.

    Returns:
        ``{"plate": name, "layer": name}``.

    Raises:
        ValueError: Blender's config has no such space (one line naming it).
    """
    known = blender_spaces(blender) if known is None else known
    out = {}
    for role, space, whose in (("plate", colour.plate, "the plate's space"),
                               ("layer", colour.layer_space, "the EXR layers' space")):
        name = next((n for n in blender_names(space) if n in known), None)
        if name is None:
            raise ValueError(
                f"Blender's colour config has no {space} ({whose}): Blender needs an OCIO config with it "
                f"(start it with OCIO=CONFIG.ocio, e.g. an ACES config), or leave comp=blender out")
        out[role] = name
    return out


def plate_job(kind: str, path: str | os.PathLike, files: list[Path]) -> dict:
    """How Blender reads the plates.

    Args:
        kind: the frame source's kind (``video``, ``sequence``, ``folder`` or ``image``).
        path: the footage as given.
        files: its image files in frame order (image input).

    Returns:
        ``{"source": "MOVIE"|"SEQUENCE"|"FILE", "path": first file, "offset": Blender's frame offset}``.

    Raises:
        ValueError: the images are not one numbered sequence Blender can step through.
    """
    if kind == "video":
        return {"source": "MOVIE", "path": str(Path(path).resolve()), "offset": 0}
    if len(files) == 1:
        return {"source": "FILE", "path": str(Path(files[0]).resolve()), "offset": 0}
    nums = []
    for f in files:
        m = re.search(r"(\d+)$", Path(f).stem)
        if m is None or Path(f).stem[: m.start()] != Path(files[0]).stem[: m.start()]:
            raise ValueError(f"the plates in {str(path)!r} are not one numbered image sequence")
        nums.append(int(m.group(1)))
    if nums != list(range(nums[0], nums[0] + len(nums))):
        raise ValueError(f"the plates in {str(path)!r} are not consecutively numbered")
    # Blender shows file number (scene frame - start + 1 + offset) at a scene frame.
    return {"source": "SEQUENCE", "path": str(Path(files[0]).resolve()), "offset": nums[0] - 1}


def _first_number(path: str | os.PathLike) -> int:
    m = re.search(r"(\d+)$", Path(path).stem)
    return int(m.group(1)) if m else 0


def write_blend(
    out: str | os.PathLike,
    plate: dict,
    layer_first: str | os.PathLike,
    fmt: str,
    frames: int,
    size: tuple[int, int],
    fps: float,
    blender: str | None = None,
    timeout: float = 300.0,
    spaces: dict[str, str] | None = None,
) -> Path:
    """Write ``out/comp.blend`` with headless Blender.

    Args:
        out: the export's directory.
        plate: :func:`plate_job`.
        layer_first: the first layer file (``…/face.000000.exr``, or ``…/face.1001.exr`` for a
            sequence numbered from 1001); it is shown at scene frame 0.
        fmt: the layers' format (``exr``: scene-linear, premultiplied; ``png8``/``png16``: sRGB, straight).
        frames: frame count.
        size: ``(w, h)`` of the plate.
        fps: frame rate (NaN or 0: 25).
        blender: the executable (default :func:`find_blender`).
        timeout: seconds Blender may take.
        spaces: a scene-referred plate's :func:`comp_spaces` (Blender's names for the plate's
            space and the EXR layers'); None: an sRGB plate (``sRGB``; EXR layers linear Rec.709).

    Returns:
        The ``.blend``'s path.

    Raises:
        FileNotFoundError: Blender is not installed.
        RuntimeError: Blender failed (its last lines of output).
    """
    exe = blender or find_blender()
    if exe is None:
        raise FileNotFoundError(NO_BLENDER)
    out = Path(out).resolve()
    blend = out / BLEND_NAME
    rate = float(fps) if fps and fps == fps and fps > 0 else 25.0
    job = {
        "blend": str(blend),
        "plate": {**plate, **({"colorspace": spaces["plate"]} if spaces else {})},
        "layer": {"path": str(Path(layer_first).resolve()), "format": fmt, "offset": _first_number(layer_first) - 1,
                  **({"colorspace": spaces["layer"]} if spaces else {})},
        "frames": int(frames),
        "size": [int(size[0]), int(size[1])],
        "fps": rate,
    }
    # Saved beside the final name (relative paths are made from its folder), then renamed.
    tmp_blend = out / f".{BLEND_NAME}.tmp.blend"
    job["blend"] = str(tmp_blend)
    with tempfile.TemporaryDirectory(prefix=".blender.", dir=out) as tmp:
        jp = Path(tmp) / "job.json"
        jp.write_text(json.dumps(job), "utf-8")
        r = subprocess.run(
            [exe, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(Path(__file__).resolve()),
             "--", str(jp)],
            capture_output=True, text=True, timeout=timeout,
        )
    if r.returncode != 0 or not tmp_blend.is_file():
        tmp_blend.unlink(missing_ok=True)
        tail = " | ".join((r.stdout + r.stderr).strip().splitlines()[-3:])
        raise RuntimeError(f"Blender could not write the comp (exit {r.returncode}): {tail}")
    os.replace(tmp_blend, blend)
    return blend


# ----------------------------------------------------------------------------- inside Blender


def _colour_space(bpy, names: tuple[str, ...]) -> str:
    known = {i.identifier for i in bpy.types.ColorManagedInputColorspaceSettings.bl_rna.properties["name"].enum_items}
    for n in names:
        if n in known:
            return n
    raise ValueError(f"none of the colour spaces {names} is known to this Blender")


def build(job: dict) -> None:
    """Build the comp scene described by ``job`` (see :func:`write_blend`) and save it (in Blender)."""
    import bpy

    sc = bpy.context.scene
    w, h = job["size"]
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = w, h, 100
    fps = float(job["fps"])
    sc.render.fps = max(1, round(fps))
    sc.render.fps_base = sc.render.fps / fps
    sc.frame_start, sc.frame_end = 0, max(0, job["frames"] - 1)
    sc.frame_current = 0
    sc.display_settings.display_device = "sRGB"
    sc.view_settings.view_transform = "Standard"
    sc.view_settings.look = "None"
    sc.view_settings.exposure, sc.view_settings.gamma = 0.0, 1.0
    sc.render.dither_intensity = 0.0
    sc.render.image_settings.file_format = "PNG"
    sc.render.image_settings.color_mode = "RGB"
    sc.render.image_settings.color_depth = "8"  # the plate's bit depth
    sc.render.filepath = "//render/comp.######"
    sc.use_nodes = True
    nt = sc.node_tree
    for n in list(nt.nodes):
        nt.nodes.remove(n)

    def image_node(spec: dict, name: str, space: str, alpha: str, loc: tuple[int, int]):
        im = bpy.data.images.load(spec["path"], check_existing=False)
        im.name = name
        im.source = spec.get("source", "SEQUENCE")
        im.colorspace_settings.name = space
        im.alpha_mode = alpha
        node = nt.nodes.new("CompositorNodeImage")
        node.name = node.label = name
        node.image = im
        node.location = loc
        if im.source in ("SEQUENCE", "MOVIE"):
            node.frame_duration = job["frames"]
            node.frame_start = 0
            node.frame_offset = int(spec.get("offset", 0))
        return node

    exr = job["layer"]["format"] == "exr"
    # A scene-referred plate's job names both spaces as Blender knows them (comp_spaces); an sRGB
    # plate's does not: sRGB, and linear Rec.709 for EXR layers.
    plate_space = _colour_space(bpy, (job["plate"].get("colorspace") or "sRGB",))
    layer_space = _colour_space(bpy, (job["layer"]["colorspace"],) if "colorspace" in job["layer"] else
                                BLENDER_LINEAR["Rec.709"] if exr else ("sRGB",))
    plate = image_node(job["plate"], "plate", plate_space, "STRAIGHT", (-400, 200))
    layer = image_node(job["layer"], "face layer", layer_space, "PREMUL" if exr else "STRAIGHT", (-400, -150))
    over = nt.nodes.new("CompositorNodeAlphaOver")
    over.name = over.label = "face over plate"
    over.location = (0, 50)
    over.use_premultiply = False  # Blender holds both images premultiplied already
    comp = nt.nodes.new("CompositorNodeComposite")
    comp.use_alpha = False
    comp.location = (300, 100)
    viewer = nt.nodes.new("CompositorNodeViewer")
    viewer.location = (300, -100)
    nt.links.new(plate.outputs["Image"], over.inputs[1])
    nt.links.new(layer.outputs["Image"], over.inputs[2])
    nt.links.new(over.outputs["Image"], comp.inputs["Image"])
    nt.links.new(over.outputs["Image"], viewer.inputs["Image"])
    # Nothing to render but the comp: no Render Layers node, so rendering runs the compositor only.
    bpy.ops.wm.save_as_mainfile(filepath=job["blend"], relative_remap=True)


if __name__ == "__main__":  # blender -b --python blender_comp.py -- JOB.json
    build(json.loads(Path(sys.argv[sys.argv.index("--") + 1]).read_text("utf-8")))
