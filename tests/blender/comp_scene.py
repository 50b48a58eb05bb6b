"""What the Blender comp scripts share (imported by them inside Blender, not by pytest)."""
import bpy


def colour_space(*names):
    """The first of ``names`` this Blender knows (``Linear`` in 3.x, ``Linear Rec.709`` in 4.x)."""
    prop = bpy.types.ColorManagedInputColorspaceSettings.bl_rna.properties["name"]
    known = {i.identifier for i in prop.enum_items}
    return next(n for n in names if n in known)


def plain_scene():
    """The current scene with colour management that leaves values alone: display sRGB, view
    Standard, look None, exposure 0, gamma 1, no dithering, full resolution."""
    sc = bpy.context.scene
    sc.display_settings.display_device = "sRGB"
    sc.view_settings.view_transform = "Standard"
    sc.view_settings.look = "None"
    sc.view_settings.exposure, sc.view_settings.gamma = 0.0, 1.0
    sc.render.dither_intensity = 0.0
    sc.render.resolution_percentage = 100
    return sc
