"""Deterministic synthetic frames: rendered codes, camera-like distortions, a corpus, the demo.

Every distortion is a pure function on a uint8 grayscale array; randomness only ever comes
from an explicit `numpy.random.Generator`, so the same seed gives identical arrays. Pillow
and numpy only (OpenCV is a benchmark peer, not a runtime dependency).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import zxingcpp
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from appliance.leat.token import loyalty_token_url

log = logging.getLogger(__name__)

Gray = npt.NDArray[np.uint8]
"""A 2-D uint8 grayscale image (height, width)."""

WHITE: Final = 255
DISTORTIONS: Final = (
    "rotate", "perspective", "blur", "noise", "low_contrast", "invert", "glare", "small",
)
"""The distortion names a corpus sample may carry (no-code samples carry `no_code` + kind)."""

DEMO_SHOP_UUID: Final = "4f1c2a9e-5b7d-4e3a-9c1f-2d8e6a0b7c35"
DEMO_ACCOUNT_SECRET: Final = "demo-account-secret"  # noqa: S105 - signs the demo token only

DEMO_CODES: Final[dict[str, str]] = {
    "loyalty_card": "LC-7F3K9Q2M",
    "giftcard": "GC-8H2J4K6L8M",
    "voucher": "SPRING-2X7Q",
    "loyalty_token": loyalty_token_url(
        portal_url="https://demo.leat.example",
        shop_uuid=DEMO_SHOP_UUID,
        unique_id="demo-0001",
        timestamp=1735689600,
        unit_value="10",
        secret=DEMO_ACCOUNT_SECRET,
    ),
}
"""The values printed on the demo frames (the Leat sandbox seeds the same ones)."""

DEMO_PHONE_CARD: Final = "LC-4D8R2W6T"
"""A second customer's loyalty card, shown on a phone in dark mode (a different value, so
the debouncer reports it even though it follows the first card within the cooldown)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One synthetic frame and what a decoder should read from it (None: no code)."""

    name: str
    pixels: Gray
    expected: str | None
    distortions: tuple[str, ...]


def render_code(text: str, fmt: str = "QRCode", module_px: int = 6) -> Gray:
    """Draw `text` as a `fmt` barcode (a zxing-cpp format name) with its quiet zone."""
    options = {"ec_level": "M"} if fmt == "QRCode" else {}
    barcode = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat[fmt], **options)
    return np.array(barcode.to_image(scale=module_px, add_quiet_zones=True), dtype=np.uint8)


def _pil(pixels: Gray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(pixels), mode="L")


def _gray(image: Image.Image) -> Gray:
    return np.asarray(image, dtype=np.uint8).copy()


def rotate(pixels: Gray, degrees: float, fill: int = WHITE) -> Gray:
    """Rotate counter-clockwise by `degrees`, growing the canvas to keep every pixel."""
    return _gray(_pil(pixels).rotate(degrees, Image.Resampling.BILINEAR, expand=True,
                                     fillcolor=fill))


def perspective(pixels: Gray, rng: np.random.Generator, strength: float = 0.2,
                fill: int = WHITE) -> Gray:
    """Tilt the image: each corner moves inwards by up to `strength` of the size."""
    h, w = pixels.shape
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    dst = src + inward * rng.uniform(0, strength, size=(4, 2)) * (w, h)
    dst -= dst.min(axis=0)
    out_w, out_h = (math.ceil(v) for v in dst.max(axis=0))
    # Pillow wants the map from output (dst) to input (src) coordinates.
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(rows), src.reshape(8))
    image = _pil(pixels).transform((out_w, out_h), Image.Transform.PERSPECTIVE,
                                   tuple(float(c) for c in coeffs),
                                   Image.Resampling.BILINEAR, fillcolor=fill)
    return _gray(image)


def blur(pixels: Gray, radius: float) -> Gray:
    """Gaussian blur (defocus or motion-free camera shake)."""
    return _gray(_pil(pixels).filter(ImageFilter.GaussianBlur(radius)))


def noise(pixels: Gray, rng: np.random.Generator, sigma: float) -> Gray:
    """Add Gaussian sensor noise of standard deviation `sigma` grey levels."""
    noisy = pixels.astype(np.float32) + rng.normal(0.0, sigma, pixels.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def low_contrast(pixels: Gray, low: int, high: int) -> Gray:
    """Squeeze grey levels 0..255 into `low`..`high` (dim light, faded print)."""
    scaled = low + pixels.astype(np.float32) * ((high - low) / 255.0)
    out: Gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return out


def invert(pixels: Gray) -> Gray:
    """Light-on-dark (a phone screen in dark mode)."""
    return (255 - pixels).astype(np.uint8)


def glare(pixels: Gray, center: tuple[float, float], radii: tuple[float, float],
          strength: float) -> Gray:
    """Add a bright elliptical blob with a soft edge (a reflection on a card or screen)."""
    h, w = pixels.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d2 = ((xx - center[0]) / radii[0]) ** 2 + ((yy - center[1]) / radii[1]) ** 2
    blob = strength * np.exp(-d2 * 1.5)
    out: Gray = np.clip(pixels.astype(np.float32) + blob, 0, 255).astype(np.uint8)
    return out


def downscale(pixels: Gray, factor: float) -> Gray:
    """Shrink by `factor` (> 1) with area averaging: smaller modules, grey edges."""
    h, w = pixels.shape
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return _gray(_pil(pixels).resize(size, Image.Resampling.BOX))


def background(size: tuple[int, int], rng: np.random.Generator) -> Gray:
    """A cluttered counter: a lighting gradient, boxes, lines and a little text."""
    w, h = size
    gx = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    gy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    a, b, c = rng.uniform(60, 200), rng.uniform(-60, 60), rng.uniform(-60, 60)
    base = np.clip(a + b * gx + c * gy, 0, 255).astype(np.uint8)
    image = _pil(base)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(20, w // 3)), y0 + int(rng.integers(20, h // 3))
        draw.rectangle((x0, y0, x1, y1), fill=int(rng.integers(0, 256)))
    for _ in range(int(rng.integers(2, 8))):
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(2)]
        draw.line(pts, fill=int(rng.integers(0, 256)), width=int(rng.integers(1, 6)))
    font = ImageFont.load_default(size=int(rng.integers(12, 28)))
    for _ in range(int(rng.integers(0, 4))):
        xy = (int(rng.integers(0, w - 50)), int(rng.integers(0, h - 20)))
        draw.text(xy, _words(rng, 3), fill=int(rng.integers(0, 256)), font=font)
    return _gray(image)


def place(code: Gray, frame: Gray, rng: np.random.Generator) -> Gray:
    """Paste `code` at a random position inside `frame` (shrunk first if it would not fit)."""
    fh, fw = frame.shape
    ch, cw = code.shape
    scale = min(1.0, 0.95 * fw / cw, 0.95 * fh / ch)
    if scale < 1.0:
        code = downscale(code, 1.0 / scale)
        ch, cw = code.shape
    y, x = int(rng.integers(0, fh - ch + 1)), int(rng.integers(0, fw - cw + 1))
    out = frame.copy()
    out[y:y + ch, x:x + cw] = code
    return out


def clutter(kind: str, size: tuple[int, int], rng: np.random.Generator) -> Gray:
    """A frame with no code: plain background, or code-like `text`, `stripes` or `blocks`."""
    frame = background(size, rng)
    w, h = size
    if kind == "plain":
        return frame
    image = _pil(frame)
    draw = ImageDraw.Draw(image)
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    if kind == "text":
        font = ImageFont.load_default(size=int(rng.integers(14, 40)))
        for line in range(int(rng.integers(3, 9))):
            draw.text((x0, y0 + line * 44), _words(rng, 5), fill=int(rng.integers(0, 80)),
                      font=font)
    elif kind == "stripes":  # barcode-like bars without a valid symbology
        x = x0
        for _ in range(int(rng.integers(20, 60))):
            bar = int(rng.integers(1, 8))
            draw.rectangle((x, y0, x + bar - 1, y0 + h // 3), fill=0)
            x += bar + int(rng.integers(1, 8))
    elif kind == "blocks":  # QR-like random modules without finder patterns
        cells = rng.integers(0, 2, size=(25, 25)).astype(np.uint8) * 255
        module = int(rng.integers(3, 8))
        patch = _pil(np.kron(cells, np.ones((module, module), np.uint8)))
        image.paste(patch, (x0, y0))
    else:
        raise ValueError(f"unknown clutter kind {kind!r}")
    return _gray(image)


_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _token(rng: np.random.Generator, length: int) -> str:
    return "".join(_ALPHABET[int(i)] for i in rng.integers(0, len(_ALPHABET), length))


def _words(rng: np.random.Generator, count: int) -> str:
    return " ".join(_token(rng, int(rng.integers(2, 9))).lower() for _ in range(count))


def _ean13(rng: np.random.Generator) -> str:
    digits = [int(d) for d in rng.integers(0, 10, 12)]
    check = (10 - sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
    return "".join(map(str, digits)) + str(check)


def _payload(fmt: str, rng: np.random.Generator) -> str:
    """A realistic value: loyalty ids, giftcards, vouchers and token URLs."""
    if fmt == "EAN13":
        return _ean13(rng)
    if fmt == "Code128":
        return f"LC-{_token(rng, int(rng.integers(6, 11)))}"
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return f"LC-{_token(rng, 8)}"
    if kind == 1:
        return f"GC-{_token(rng, 10)}"
    if kind == 2:
        return f"{_token(rng, 6)}-{_token(rng, 4)}"
    hexes = "".join(f"{int(v):02x}" for v in rng.integers(0, 256, 20))
    return (f"https://demo.leat.example/l?version=v3&shop_uuid={_token(rng, 8).lower()}"
            f"&unique_id={_token(rng, 10).lower()}&timestamp={int(rng.integers(10**9, 2 * 10**9))}"
            f"&unit_name=purchase_amount&unit_value={int(rng.integers(1, 100))}&hash={hexes}")


def distort(code: Gray, frame: Gray, distortions: tuple[str, ...],
            rng: np.random.Generator, *, linear: bool = False, module_px: int = 6) -> Gray:
    """Apply `distortions` to `code` (card-level) and the frame (camera-level); paste it.

    A `linear` (1-D) code is only tilted a little, or held upside down, as cards are;
    `small` shrinks modules of `module_px` pixels to 1.6-2.6 pixels.
    """
    if "small" in distortions:
        code = downscale(code, max(1.0, module_px / float(rng.uniform(1.6, 2.6))))
    if "invert" in distortions:
        code = invert(code)
    if "glare" in distortions:
        h, w = code.shape
        centre = (float(rng.uniform(0.3, 0.7) * w), float(rng.uniform(0.3, 0.7) * h))
        radii = (float(rng.uniform(0.15, 0.3) * w), float(rng.uniform(0.1, 0.25) * h))
        code = glare(code, centre, radii, float(rng.uniform(100, 200)))
    fill = int(np.median(code[0]))
    if "perspective" in distortions:
        code = perspective(code, rng, float(rng.uniform(0.08, 0.2)), fill=fill)
    if "rotate" in distortions:
        turn = float(rng.uniform(3, 15)) * rng.choice([-1, 1])
        turn += 180 * int(rng.integers(0, 2)) if linear else float(rng.uniform(0, 340))
        code = rotate(code, turn, fill=fill)
    out = place(code, frame, rng)
    if "low_contrast" in distortions:
        low = int(rng.integers(60, 130))
        out = low_contrast(out, low, low + int(rng.integers(35, 70)))
    if "blur" in distortions:
        out = blur(out, float(rng.uniform(0.8, 1.8)))
    if "noise" in distortions:
        out = noise(out, rng, float(rng.uniform(6, 20)))
    return out


def make_sample(seed: int, index: int, size: tuple[int, int]) -> Sample:
    """The `index`-th sample of corpus `seed`: independent of every other sample."""
    rng = np.random.default_rng([seed, index])
    frame = background(size, rng)
    tag = f"{index:04d}-{size[0]}x{size[1]}"
    if rng.random() < 0.2:
        kind = ("plain", "text", "stripes", "blocks")[int(rng.integers(0, 4))]
        pixels = clutter(kind, size, rng)
        return Sample(f"{tag}-none-{kind}", pixels, None, ("no_code", kind))
    fmt = str(rng.choice(["QRCode", "EAN13", "Code128"], p=[0.8, 0.1, 0.1]))
    text = _payload(fmt, rng)
    picked: tuple[str, ...] = ()
    if rng.random() > 0.2:
        count = int(rng.integers(1, 3))
        chosen = rng.choice(len(DISTORTIONS), size=count, replace=False)
        picked = tuple(DISTORTIONS[int(i)] for i in sorted(chosen))
    module = int(rng.integers(3, 7)) if fmt == "QRCode" else int(rng.integers(2, 5))
    pixels = distort(render_code(text, fmt, module), frame, picked, rng,
                     linear=fmt != "QRCode", module_px=module)
    return Sample(f"{tag}-{fmt}-{'+'.join(picked) or 'clean'}", pixels, text, picked)


def make_corpus(seed: int, sizes: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720)),
                count: int = 300) -> list[Sample]:
    """`count` samples cycling through `sizes`: ~20% without a code, ~16% clean codes."""
    return [make_sample(seed, i, sizes[i % len(sizes)]) for i in range(count)]


def write_demo_frames(folder: Path) -> list[Path]:
    """Write the demo's PNG frames, named in play order; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2024)
    size = (640, 480)
    code = DEMO_CODES
    steps: list[tuple[str, Gray]] = [("empty", background(size, rng))]
    steps.append(("loyalty-card", place(render_code(code["loyalty_card"], module_px=8),
                                        background(size, rng), rng)))
    steps.append(("empty", clutter("text", size, rng)))
    steps.append(("giftcard", place(rotate(render_code(code["giftcard"], module_px=7), 12),
                                    background(size, rng), rng)))
    steps.append(("empty", background(size, rng)))
    voucher = perspective(render_code(code["voucher"], module_px=7), rng, 0.12)
    steps.append(("voucher", place(voucher, background(size, rng), rng)))
    steps.append(("empty", clutter("stripes", size, rng)))
    screen = invert(render_code(DEMO_PHONE_CARD, module_px=7))
    h, w = screen.shape
    screen = glare(screen, (w * 0.6, h * 0.35), (w * 0.2, h * 0.12), 90)
    steps.append(("phone-dark-mode", place(screen, background(size, rng), rng)))
    steps.append(("empty", background(size, rng)))
    token = render_code(code["loyalty_token"], module_px=4)
    steps.append(("loyalty-token", place(token, background(size, rng), rng)))
    steps.append(("empty", background(size, rng)))
    paths = []
    for number, (name, pixels) in enumerate(steps):
        path = folder / f"{number:03d}-{name}.png"
        _pil(pixels).save(path)
        paths.append(path)
    log.info("wrote %d demo frames to %s", len(paths), folder)
    return paths
