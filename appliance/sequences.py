"""Deterministic synthetic frame sequences: a card held in front of the camera, or no card.

A held card jitters by a pixel or two per frame (a hand is never still) while the
condition is re-drawn every frame: fresh sensor noise, a glare spot that drifts as the card
tilts, a finger sliding over a corner, motion blur that fades as the card settles. A phone
screen ("screen_glare") shows the code dark-on-light or light-on-dark inside its bezel and
reflects a lamp: a large saturated ellipse with a soft rim that starts over a finder pattern
and crosses the code diagonally, a few pixels a frame, so that every module is clear of it
in some frame but the code never is whole in one; half the screens are in dim, noisy light. Scenes
without a code are a still counter (noise only), a changing one (an object sliding past) or
a phone held up without a code (an app's text and buttons) reflecting a moving lamp.
Used by bench/decode.py and the multi-frame tests; randomness only from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from appliance import samples
from appliance.samples import Gray

# new conditions go last: a condition's index seeds its cards
CONDITIONS: Final = ("clean", "noise", "low_contrast", "glare", "motion", "finger",
                     "screen_glare")
EMPTY_SCENES: Final = ("still", "changing", "glared")


@dataclass(frozen=True, slots=True)
class Sequence:
    """Frames in capture order and the text they show (None: no code)."""

    name: str
    frames: tuple[Gray, ...]
    expected: str | None
    box: tuple[int, int, int, int] | None = None  # the card in the first frame: x0, y0, x1, y1
    offsets: tuple[tuple[int, int], ...] = ()  # the card's move since the first frame (dx, dy)


def held_card(condition: str, seed: int, length: int = 20,
              size: tuple[int, int] = (640, 480)) -> Sequence:
    """A card held for `length` frames under `condition` (one of CONDITIONS)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}")
    rng = np.random.default_rng([seed, CONDITIONS.index(condition), length])
    text = f"LC-{''.join(rng.choice(list('ABCDEFGHJKLMNPQRSTUVWXYZ23456789'), 8))}"
    module = int(rng.integers(3, 5))
    # Printed card under a camera's auto exposure: ink at 20, paper at 215 (not clipped)
    code = samples.low_contrast(samples.render_code(text, module_px=module), 20, 215)
    lamp = None
    if condition == "screen_glare":
        code, lamp = _phone(samples.render_code(text, module_px=module), module, rng)
    scene = samples.background(size, rng)
    w, h = size
    ch, cw = code.shape
    x0, y0 = int(rng.integers(8, w - cw - 8)), int(rng.integers(8, h - ch - 8))
    frames = []
    first: tuple[int, int, int, int] | None = None
    offsets: list[tuple[int, int]] = []
    jx, jy = 0.0, 0.0
    for i in range(length):
        jx = float(np.clip(jx + rng.normal(0, 0.8), -4, 4))
        jy = float(np.clip(jy + rng.normal(0, 0.8), -4, 4))
        card = _lit(code, lamp, i, length) if lamp else _condition(code, condition, i, length, rng)
        frame = scene.copy()
        x = int(np.clip(x0 + round(jx), 0, w - cw))
        y = int(np.clip(y0 + round(jy), 0, h - ch))
        frame[y:y + ch, x:x + cw] = card
        first = first or (x, y, x + cw, y + ch)
        offsets.append((x - first[0], y - first[1]))
        frames.append(_camera(frame, condition, i, rng, lamp.sigma if lamp else 3.0))
    return Sequence(f"{condition}-{seed}", tuple(frames), text, first, tuple(offsets))


def empty_scene(kind: str, seed: int, length: int = 20,
                size: tuple[int, int] = (640, 480)) -> Sequence:
    """A counter without a code: `still` (noise only), `changing` (an object passes) or
    `glared` (a held phone showing no code, a lamp's reflection crossing its screen)."""
    if kind not in EMPTY_SCENES:
        raise ValueError(f"unknown empty scene {kind!r}")
    rng = np.random.default_rng([seed, 99, EMPTY_SCENES.index(kind), length])
    clutter = ("plain", "text", "stripes", "blocks")[seed % 4]
    scene = samples.clutter(clutter, size, rng)
    w, h = size
    frames = []
    shade, side = int(rng.integers(0, 256)), int(rng.integers(60, 160))
    phone, lamp = _blank_phone(rng) if kind == "glared" else (None, None)
    for i in range(length):
        frame = scene.copy()
        if phone is not None and lamp is not None:
            x = (w - phone.shape[1]) // 3 + int(rng.integers(-2, 3))  # held: a hand's jitter
            y = (h - phone.shape[0]) // 2 + int(rng.integers(-2, 3))
            frame[y:y + phone.shape[0], x:x + phone.shape[1]] = _lit(phone, lamp, i, length)
        if kind == "changing":
            x = int((i * w) / length) - side // 2
            y = h // 3
            frame[y:y + side, max(0, x):max(0, x + side)] = shade
        frames.append(samples.noise(frame, rng, 3.0))
    return Sequence(f"empty-{kind}-{clutter}-{seed}", tuple(frames), None)


def _condition(code: Gray, condition: str, i: int, length: int,
               rng: np.random.Generator) -> Gray:
    """The card as it looks in frame `i` (card-level effects)."""
    h, w = code.shape
    if condition == "glare":  # a saturated spot drifting across the card as it tilts
        t = i / max(1, length - 1)
        centre = (w * (0.3 + 0.4 * t), h * (0.45 + 0.1 * np.sin(3 * t)))
        return samples.glare(code, centre, (w * 0.22, h * 0.2), 320)
    if condition == "finger":  # a fingertip over the data modules, shifting with the grip
        out = code.copy()
        angle = 2 * np.pi * (0.17 * i + float(rng.uniform(-0.03, 0.03)))
        modules = (h // 29) or 1  # version 1 (21 modules) plus 4-module quiet zones
        fx = (17.5 + 5.5 * np.cos(angle)) * modules
        fy = (17.5 + 5.5 * np.sin(angle)) * modules
        yy, xx = np.mgrid[0:h, 0:w]
        tip = (xx - fx) ** 2 + (yy - fy) ** 2 < (5.0 * modules) ** 2
        out[tip] = 150 + (yy[tip] % 7).astype(np.uint8)
        return out
    return code


@dataclass(frozen=True, slots=True)
class _Lamp:
    """A lamp's reflection on a phone screen: where it starts and ends (screen pixels),
    its radii and the noise of the light the phone is held in."""

    start: tuple[float, float]
    end: tuple[float, float]
    radii: tuple[float, float]
    sigma: float


def _phone(code: Gray, module: int, rng: np.random.Generator) -> tuple[Gray, _Lamp]:
    """`code` on a phone screen (light or dark mode, a dark bezel) and its lamp reflection.

    The reflection starts over one of the three finder patterns and ends over the far
    corner; its radius is 0.28-0.34 of the symbol's side, which keeps every module clear of it
    in the first or the last frames (module 3-4 pixels: a 21-module symbol).
    """
    dark = bool(rng.integers(0, 2))
    screen = samples.low_contrast(samples.invert(code) if dark else code, 24, 200 if dark else 215)
    border = 2 * module + int(rng.integers(0, 2 * module))  # the app's margin around the code
    screen = np.pad(screen, border, constant_values=int(screen[0, 0]))
    bezel = int(rng.integers(6, 12))
    phone: Gray = np.pad(screen, bezel, constant_values=12)
    side = code.shape[0] - 8 * module  # the symbol itself, without its quiet zone
    near = bezel + border + 4 * module + 3.5 * module  # a finder pattern's centre
    far = near + side - 7 * module
    corners = [(near, near), (far, near), (near, far)]
    start = corners[int(rng.integers(0, 3))]
    end = (2 * near + side - 7 * module - start[0], 2 * near + side - 7 * module - start[1])
    radius = side * float(rng.uniform(0.28, 0.34))
    radii = (radius * float(rng.uniform(0.9, 1.1)), radius * float(rng.uniform(0.85, 1.0)))
    sigma = float(rng.choice([4.0, 18.0]))  # an evening counter: bright or dim and noisy
    return phone, _Lamp(start, end, radii, sigma)


def _blank_phone(rng: np.random.Generator) -> tuple[Gray, _Lamp]:
    """A phone showing an app without a code (lines of text, a button) and its lamp."""
    screen = np.full((int(rng.integers(150, 200)), int(rng.integers(90, 120))), 200, np.uint8)
    for row in range(12, screen.shape[0] - 40, 14):  # text lines of random length
        screen[row:row + 6, 10:10 + int(rng.integers(20, screen.shape[1] - 20))] = 40
    screen[-34:-12, 12:-12] = 60  # a button
    if rng.integers(0, 2):
        screen = samples.invert(screen)
    phone: Gray = np.pad(screen, 8, constant_values=12)
    h, w = phone.shape
    radius = 0.3 * w
    return phone, _Lamp((0.3 * w, 0.2 * h), (0.7 * w, 0.8 * h), (radius, 0.9 * radius), 3.0)


def _lit(phone: Gray, lamp: _Lamp, i: int, length: int) -> Gray:
    """The phone in frame `i`: the reflection moved along its path (a tilting hand)."""
    t = i / max(1, length - 1)
    cx = lamp.start[0] + (lamp.end[0] - lamp.start[0]) * t
    cy = lamp.start[1] + (lamp.end[1] - lamp.start[1]) * t
    return reflection(phone, (cx, cy), lamp.radii)


def reflection(pixels: Gray, centre: tuple[float, float], radii: tuple[float, float]) -> Gray:
    """A lamp reflected by a glossy screen: light added, saturated inside `radii`, fading
    to nothing over a rim a third as wide (smoothstep)."""
    h, w = pixels.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.sqrt(((xx - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2)
    rim = np.clip((1.33 - d) / 0.33, 0.0, 1.0)
    light = 260.0 * rim * rim * (3 - 2 * rim)
    out: Gray = np.clip(pixels.astype(np.float32) + light, 0, 255).astype(np.uint8)
    return out


def _camera(frame: Gray, condition: str, i: int, rng: np.random.Generator,
            sigma: float = 3.0) -> Gray:
    """Camera-level effects on the whole frame."""
    if condition == "noise":  # dim light, high ISO: every frame its own noise
        return samples.noise(frame, rng, 100.0)
    if condition == "low_contrast":  # haze or faded print: a narrow band of grey
        low = 112
        return samples.noise(samples.low_contrast(frame, low, low + 16), rng, 5.0)
    if condition == "motion":  # brought in fast, then settling: blur fading out
        length = max(1, 15 - 2 * i)
        return _motion_blur(samples.noise(frame, rng, 3.0), length)
    return samples.noise(frame, rng, sigma)


def _motion_blur(frame: Gray, length: int) -> Gray:
    """A horizontal box blur of `length` pixels (the card moving sideways)."""
    if length <= 1:
        return frame
    kernel = np.ones(length, np.float32) / length
    padded = np.pad(frame.astype(np.float32), ((0, 0), (length // 2, length - 1 - length // 2)),
                    mode="edge")
    cumsum = np.cumsum(padded, axis=1)
    cumsum = np.concatenate([np.zeros((frame.shape[0], 1), np.float32), cumsum], axis=1)
    out = (cumsum[:, length:] - cumsum[:, :-length]) * kernel[0]
    blurred: Gray = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return blurred
