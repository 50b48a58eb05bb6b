"""Composite a plate-space EXR layer over a scene-linear EXR plate in Blender's compositor (run
by Blender, not pytest).

    blender -b --factory-startup --python tests/blender/plate_comp.py -- JOB.json

``JOB.json``: ``{"plate", "layer", "out", "report"}``. The plate (scene-linear Rec.709, float
EXR, no alpha) and the layer (the same space, half EXR, premultiplied) are loaded into Image
nodes with Blender's scene-linear Rec.709 colour space (``Linear`` in 3.x, ``Linear Rec.709`` in
4.x: no conversion on loading) and the layer's alpha as premultiplied; the layer goes over the
plate in an Alpha Over node with *Convert Premultiplied* off (``out = fg + bg * (1 - fg.a)``), and
the Composite node's result is rendered to ``out`` as a 32-bit float EXR (RGB, ZIP). Float EXRs
are written in the scene-linear space, without the view transform; the view transform is set
to Standard anyway (look None, exposure 0, gamma 1) so nothing else depends on it. What Blender
made of the images (colour spaces, alpha modes, float buffers, sizes, its version) goes to
``report`` as JSON.

With ``"blend"`` and ``"blend_out"`` in the job, the ``comp.blend`` that ``swap-export
comp=blender`` wrote is then opened and its frame 0 rendered to ``blend_out`` the same way (32-bit
float EXR, RGB); the colour spaces of its Image nodes go to the report's ``blend``.
"""
import json
import sys
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))  # Blender does not put the script's folder there
from comp_scene import colour_space, plain_scene  # noqa: E402


def main(job):
    sc = plain_scene()
    sc.render.pixel_aspect_x = sc.render.pixel_aspect_y = 1.0
    settings = sc.render.image_settings
    settings.file_format, settings.color_mode, settings.color_depth = "OPEN_EXR", "RGB", "32"
    settings.exr_codec = "ZIP"
    sc.use_nodes = True
    nt = sc.node_tree
    for n in list(nt.nodes):  # no Render Layers node: Blender renders no scene, only the comp
        nt.nodes.remove(n)
    linear = colour_space("Linear Rec.709", "Linear")
    plate = bpy.data.images.load(job["plate"], check_existing=False)
    layer = bpy.data.images.load(job["layer"], check_existing=False)
    for img in (plate, layer):
        img.colorspace_settings.name = linear
        img.alpha_mode = "PREMUL"
    nodes = [nt.nodes.new("CompositorNodeImage") for _ in range(2)]
    nodes[0].image, nodes[1].image = plate, layer
    over = nt.nodes.new("CompositorNodeAlphaOver")
    over.use_premultiply = False
    over.premul = 0.0
    over.inputs[0].default_value = 1.0  # Fac
    comp = nt.nodes.new("CompositorNodeComposite")
    comp.use_alpha = False
    nt.links.new(nodes[0].outputs["Image"], over.inputs[1])  # background
    nt.links.new(nodes[1].outputs["Image"], over.inputs[2])  # foreground
    nt.links.new(over.outputs["Image"], comp.inputs["Image"])
    sc.render.resolution_x, sc.render.resolution_y = plate.size[0], plate.size[1]
    sc.render.filepath = job["out"]
    bpy.ops.render.render(write_still=True)
    report = {"version": bpy.app.version_string, "linear": linear,
              "view_transform": sc.view_settings.view_transform,
              "images": {k: {"colorspace": img.colorspace_settings.name, "alpha_mode": img.alpha_mode,
                             "is_float": img.is_float, "size": list(img.size), "depth": img.depth}
                         for k, img in (("plate", plate), ("layer", layer))}}
    if job.get("blend"):
        report["blend"] = render_blend(job["blend"], job["blend_out"])
    Path(job["report"]).write_text(json.dumps(report), "utf-8")


def render_blend(blend, out):
    """Frame 0 of a ``comp.blend`` as a 32-bit float EXR; its images' colour spaces."""
    bpy.ops.wm.open_mainfile(filepath=blend)
    sc = bpy.context.scene
    settings = sc.render.image_settings
    settings.file_format, settings.color_mode, settings.color_depth = "OPEN_EXR", "RGB", "32"
    settings.exr_codec = "ZIP"
    sc.frame_set(0)
    sc.render.filepath = out
    bpy.ops.render.render(write_still=True)
    return {"images": {img.name: img.colorspace_settings.name for img in bpy.data.images if img.source != "VIEWER"}}


main(json.loads(Path(sys.argv[sys.argv.index("--") + 1]).read_text("utf-8")))
