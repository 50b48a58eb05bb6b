"""Export: swapped faces as RGBA layers for compositing (``swap-export``; ``docs/export.md``).

``swapper`` (checkpoint loading, batched inference), ``composite`` (un-warp, alpha, colour
matching), ``writers`` (PNG/EXR files and their metadata), ``frames`` (footage + face set
frame sources), ``preview`` (H.264 preview, contact sheet), ``pipeline`` (the streaming loop).
"""
