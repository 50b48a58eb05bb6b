"""Composite face layers over plates in Blender, as an artist would (run by Blender, not pytest).

    blender -b --factory-startup --python tests/blender/comp.py -- JOBS.json

``JOBS.json`` is a list of ``{"plate", "layer", "format", "out"}``: for each, the plate (an sRGB
PNG) and the layer (``exr``: scene-linear, premultiplied; ``png16``: sRGB, straight alpha) are
loaded into Image nodes, the layer goes over the plate in an Alpha Over node, and the Composite
node's result is rendered to ``out`` as a 16-bit sRGB PNG. Colour management: display sRGB, view
transform Standard, look None, no dithering, so the render is the composite's own values. All
jobs run in one Blender process (its cold start is the slow part).
"""
import json
import sys
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))  # Blender does not put the script's folder there
from comp_scene import colour_space, plain_scene  # noqa: E402


def main(jobs):
    sc = plain_scene()
    settings = sc.render.image_settings
    settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGB", "16"
    sc.use_nodes = True
    nt = sc.node_tree
    linear, srgb = colour_space("Linear Rec.709", "Linear"), colour_space("sRGB")
    for job in jobs:
        for n in list(nt.nodes):
            nt.nodes.remove(n)
        plate = bpy.data.images.load(job["plate"], check_existing=False)
        plate.colorspace_settings.name = srgb
        layer = bpy.data.images.load(job["layer"], check_existing=False)
        exr = job["format"] == "exr"
        layer.colorspace_settings.name = linear if exr else srgb
        layer.alpha_mode = "PREMUL" if exr else "STRAIGHT"
        nodes = [nt.nodes.new("CompositorNodeImage") for _ in range(2)]
        nodes[0].image, nodes[1].image = plate, layer
        over = nt.nodes.new("CompositorNodeAlphaOver")
        over.use_premultiply = False
        comp = nt.nodes.new("CompositorNodeComposite")
        comp.use_alpha = False
        nt.links.new(nodes[0].outputs["Image"], over.inputs[1])
        nt.links.new(nodes[1].outputs["Image"], over.inputs[2])
        nt.links.new(over.outputs["Image"], comp.inputs["Image"])
        sc.render.resolution_x, sc.render.resolution_y = plate.size[0], plate.size[1]
        sc.render.filepath = job["out"]
        bpy.ops.render.render(write_still=True)
        print("loaded", job["layer"], "as", tuple(layer.size), flush=True)


main(json.loads(Path(sys.argv[sys.argv.index("--") + 1]).read_text("utf-8")))
