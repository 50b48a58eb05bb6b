"""Parameters of the phantom: who is rendered (:class:`Identity`) and how (:class:`FrameParams`).

Both are frozen dataclasses of plain floats, ints and tuples, so they hash (the renderer caches
per-identity textures), compare, and serialise to JSON with :func:`dataclasses.asdict`.

Conventions:
    * *Template units*: the coordinates of :data:`progressive_swap.core.landmarks.MEAN_FACE`
      (outer brow corners near x = 0 and x = 1, brow line near y = 0, chin near y = 1.2),
      x right, y down, depth z towards the camera.
    * Frame params are **resolution-free**: positions and sizes are fractions of the (square)
      frame side, so the same params render the same picture at any size.
    * Angles are in degrees. ``yaw > 0`` turns the nose towards image right (+x),
      ``pitch > 0`` tips the nose down (+y), ``roll > 0`` turns the face clockwise on screen
      (the eye line's angle ``atan2(dy, dx)`` equals ``roll`` in a frontal view).
    * Colours are sRGB triples in ``[0, 1]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Colour = tuple[float, float, float]

# Palettes to draw from; a little jitter is added so that no two identities share a colour.
_SKIN_LIGHT: Colour = (0.97, 0.80, 0.69)
_SKIN_DARK: Colour = (0.33, 0.21, 0.15)
_HAIR = {
    "black": (0.07, 0.06, 0.06),
    "dark_brown": (0.20, 0.12, 0.07),
    "brown": (0.40, 0.25, 0.13),
    "blonde": (0.82, 0.67, 0.42),
    "red": (0.62, 0.26, 0.10),
    "grey": (0.62, 0.61, 0.60),
}
_IRIS = {
    "brown": (0.36, 0.20, 0.09),
    "blue": (0.30, 0.48, 0.70),
    "green": (0.33, 0.50, 0.30),
    "grey": (0.50, 0.55, 0.58),
    "hazel": (0.52, 0.40, 0.20),
}

# Pose ranges of :func:`sample_frame`, degrees.
YAW_RANGE = 40.0
PITCH_RANGE = 25.0
ROLL_RANGE = 25.0
OCCLUDER_KINDS = ("hand", "bar", "mic")


@dataclass(frozen=True)
class Identity:
    """One phantom person. Make them with :func:`sample_identity`.

    Shape offsets are in template units; factors are relative to the mean face (1 = mean).
    """

    seed: int
    """Seed of the identity; also seeds its procedural skin texture."""
    face_width: float
    """Width factor of the upper face (temples, cheekbones)."""
    jaw_width: float
    """Width factor of the lower jaw about the face's centre line."""
    chin: float
    """Chin drop, template units (negative: shorter chin)."""
    cheeks: float
    """Cheek fullness: outward push of the mid jaw, template units."""
    skin: Colour
    lips: Colour
    hair: Colour
    iris: Colour
    eye_spacing: float
    """Outward shift of each eye, template units."""
    eye_size: float
    """Eye size factor about each eye's centre."""
    brow_arch: float
    """Lift of the brow's middle relative to its ends, template units."""
    brow_height: float
    """Vertical offset of the brows, template units (negative: higher)."""
    brow_thickness: float
    """Brow thickness at its thickest (inner) part, template units."""
    nose_length: float
    """Nose length factor (bridge to base)."""
    nose_width: float
    """Width factor of the nose base."""
    nose_depth: float
    """Protrusion of the nose tip, template units."""
    mouth_width: float
    """Mouth width factor."""
    lip_thickness: float
    """Lip thickness factor."""
    hairline: float
    """Height of the hairline's centre, template y (the brow line is y = 0)."""
    hair_volume: float
    """How far the hair stands off the skull, template units."""
    beard: float
    """Beard/stubble density in [0, 1] (0 for most identities)."""
    freckles: float
    """Freckle density in [0, 1]."""
    pores: float
    """Contrast factor of the pore texture."""


@dataclass(frozen=True)
class Occluder:
    """Something in front of the face: a hand, a bar, or a microphone.

    Its position and size are in *face units* (template units scaled by the frame's
    ``scale``) relative to the face's pivot, so it stays on the face at every frame size.
    """

    kind: str
    """``hand``, ``bar`` or ``mic``."""
    x: float
    y: float
    size: float
    angle: float
    """Degrees, clockwise on screen."""
    color: Colour


@dataclass(frozen=True)
class FrameParams:
    """Everything about one frame except who is in it. Resolution-free.

    The *true swap* of a frame of identity A is identity B rendered with A's FrameParams.
    """

    yaw: float
    pitch: float
    roll: float
    mouth_open: float
    """0 closed .. 1 wide open."""
    smile: float
    """0 .. 1."""
    blink: float
    """0 open .. 1 closed."""
    brow_raise: float
    """0 .. 1."""
    light_dir: tuple[float, float, float]
    """Unit vector towards the light in camera space (x right, y down, z towards the camera)."""
    light_strength: float
    """Diffuse (Lambert) gain."""
    ambient: float
    """Ambient gain."""
    light_color: Colour
    """Multiplicative tint of the face's light."""
    cx: float
    """Horizontal position of the head pivot, fraction of the frame side."""
    cy: float
    """Vertical position of the head pivot, fraction of the frame side."""
    scale: float
    """One template unit as a fraction of the frame side (the face is ~1.1 units wide)."""
    background: int
    """Seed of the procedural background."""
    occluder: Occluder | None = None


def _rng(rng_or_seed: int | np.random.Generator | np.random.SeedSequence | tuple) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def _jitter(rng: np.random.Generator, c: Colour, amount: float) -> Colour:
    return tuple(float(np.clip(v + rng.uniform(-amount, amount), 0.0, 1.0)) for v in c)  # type: ignore[return-value]


def _lerp(a: Colour, b: Colour, t: float) -> Colour:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def sample_identity(seed: int) -> Identity:
    """Draw a phantom identity from its seed (deterministic).

    Identities differ in skin tone, hair colour and volume, face shape and features, so two
    seeds are easy to tell apart even at 64 px. The dataset generator uses seed
    ``seed * 1000 + i`` for identity ``i`` (see ``docs/phantom.md``).
    """
    rng = np.random.default_rng([int(seed), 0x1D])
    darkness = float(rng.uniform(0.0, 1.0) ** 1.3)
    skin = _jitter(rng, _lerp(_SKIN_LIGHT, _SKIN_DARK, darkness), 0.035)
    # Lips: redder and darker than the skin; dark skin gets browner lips.
    lips = tuple(
        float(np.clip(v, 0, 1))
        for v in (skin[0] * 0.86 + 0.02, skin[1] * 0.55, skin[2] * 0.60)
    )
    lips = _jitter(rng, lips, 0.03)  # type: ignore[arg-type]
    hair_names = list(_HAIR)
    # Grey and red are rarer.
    p = np.array([0.25, 0.22, 0.2, 0.15, 0.09, 0.09])
    hair = _jitter(rng, _HAIR[hair_names[rng.choice(len(hair_names), p=p)]], 0.04)
    iris = _jitter(rng, _IRIS[list(_IRIS)[rng.integers(len(_IRIS))]], 0.05)
    u = rng.uniform
    return Identity(
        seed=int(seed),
        face_width=float(u(0.97, 1.05)),
        jaw_width=float(u(0.84, 1.12)),
        chin=float(u(-0.04, 0.08)),
        cheeks=float(u(0.0, 0.05)),
        skin=skin,
        lips=lips,
        hair=hair,
        iris=iris,
        eye_spacing=float(u(-0.025, 0.03)),
        eye_size=float(u(0.85, 1.2)),
        brow_arch=float(u(-0.01, 0.035)),
        brow_height=float(u(-0.025, 0.015)),
        brow_thickness=float(u(0.026, 0.05)),
        nose_length=float(u(0.88, 1.15)),
        nose_width=float(u(0.82, 1.3)),
        nose_depth=float(u(0.2, 0.3)),
        mouth_width=float(u(0.86, 1.14)),
        lip_thickness=float(u(0.7, 1.4)),
        hairline=float(u(-0.42, -0.2)),
        hair_volume=float(u(0.03, 0.2)),
        beard=float(u(0.35, 1.0)) if u() < 0.2 else 0.0,
        freckles=float(u(0.0, 1.0) ** 2),
        pores=float(u(0.7, 1.4)),
    )


def sample_occluder(rng: np.random.Generator) -> Occluder:
    """Draw a random occluder placed over the face (face units around the head pivot)."""
    kind = OCCLUDER_KINDS[rng.integers(len(OCCLUDER_KINDS))]
    # Centre somewhere over the face (pivot-relative face units), so it covers something.
    x = float(rng.uniform(-0.45, 0.45))
    y = float(rng.uniform(-0.35, 0.55))
    if kind == "hand":
        color = _jitter(rng, _lerp(_SKIN_LIGHT, _SKIN_DARK, float(rng.uniform())), 0.04)
        size = float(rng.uniform(0.35, 0.6))
    elif kind == "bar":
        color = tuple(float(v) for v in rng.uniform(0.05, 0.95, 3))
        size = float(rng.uniform(0.08, 0.22))  # bar thickness
    else:
        color = tuple(float(v) for v in rng.uniform(0.05, 0.3, 3))
        size = float(rng.uniform(0.12, 0.2))  # head radius
    angle = float(rng.uniform(-180, 180))
    return Occluder(kind=kind, x=x, y=y, size=size, angle=angle, color=color)  # type: ignore[arg-type]


def sample_frame(
    rng_or_seed: int | np.random.Generator | tuple,
    size: int | None = None,
    occluders: float = 0.0,
) -> FrameParams:
    """Draw random frame parameters: pose, expression, light, placement, background, occluder.

    Ranges: yaw ±40°, pitch ±25°, roll ±25°; expressions in [0, 1]; the face is placed so that
    a ``head`` crop stays mostly inside the frame.

    Args:
        rng_or_seed: a ``numpy.random.Generator`` (advanced in place) or a seed.
        size: frame side the params are meant for. The params are resolution-free and do not
            depend on it (the same seed gives the same picture at every size); it is only
            checked to be positive.
        occluders: probability of an occluder in front of the face.

    Returns:
        A :class:`FrameParams`.
    """
    if size is not None and int(size) <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if not 0.0 <= occluders <= 1.0:
        raise ValueError(f"occluders is a probability in [0, 1], got {occluders}")
    rng = _rng(rng_or_seed)
    u = rng.uniform
    # Light mostly from the camera side and above, sometimes grazing.
    az = u(-75, 75) * np.pi / 180
    el = u(-20, 55) * np.pi / 180
    light = (np.sin(az) * np.cos(el), -np.sin(el), np.cos(az) * np.cos(el))
    # Expressions: often near neutral, sometimes strong.
    expr = [float(np.clip(u(-0.4, 1.0), 0.0, 1.0)) for _ in range(3)]
    blink = float(np.clip(u(-1.5, 1.0), 0.0, 1.0))  # eyes open most of the time
    occ = sample_occluder(rng) if u() < occluders else None
    return FrameParams(
        yaw=float(u(-YAW_RANGE, YAW_RANGE)),
        pitch=float(u(-PITCH_RANGE, PITCH_RANGE)),
        roll=float(u(-ROLL_RANGE, ROLL_RANGE)),
        mouth_open=expr[0],
        smile=expr[1],
        blink=blink,
        brow_raise=expr[2],
        light_dir=tuple(float(v) for v in light),  # type: ignore[arg-type]
        light_strength=float(u(0.45, 0.9)),
        ambient=float(u(0.3, 0.55)),
        light_color=_jitter(rng, (1.0, 0.97, 0.93), 0.05),
        cx=float(u(0.42, 0.58)),
        cy=float(u(0.40, 0.52)),
        scale=float(u(0.27, 0.34)),
        background=int(rng.integers(0, 2**31 - 1)),
        occluder=occ,
    )
