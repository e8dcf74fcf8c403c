"""A still scene stays cheap under camera-like disturbances (from an outside review): a
small change read alone is not kept for a whole-frame read when it ends, or sensor noise,
a hot pixel or a blinking light would make the next frame a whole one again and again."""

from __future__ import annotations

import numpy as np
import pytest
from test_decode_still import CountingDecoder

from appliance import samples
from appliance.config import DecodeConfig
from appliance.source import Frame

W, H = 640, 480
FRAMES = 180  # 6 s at 30 fps: 3 scheduled full reads (still_recheck_frames = 60)


SCENE = samples.background((W, H), np.random.default_rng(4)).astype(np.float32)


def frame(kind: str, i: int, rng: np.random.Generator) -> np.ndarray:
    p = SCENE.copy()
    if kind == "smoothed noise":  # sensor noise after demosaic/ISP denoise: std 4,
        n = rng.normal(0, 4, p.shape)  # spatially correlated over 3 px
        p += sum(np.roll(np.roll(n, a, 0), b, 1) for a in (-1, 0, 1) for b in (-1, 0, 1)) / 3
    elif kind == "row noise":  # CMOS row offsets, sigma 2, plus pixel noise 1.5
        p += rng.normal(0, 1.5, p.shape) + rng.normal(0, 2, (H, 1))
    elif kind == "flicker bands":  # mains flicker rolling through, 1% amplitude
        y = np.arange(H)[:, None]
        p = p * (1 + 0.01 * np.sin(2 * np.pi * (y / 160 + i * 0.37))) + rng.normal(0, 1.5, p.shape)
    elif kind == "hot pixels":  # 1e-4 of pixels flash white per frame (~30 a frame)
        p += rng.normal(0, 1.5, p.shape)
        p[rng.random(p.shape) < 1e-4] = 255
    elif kind == "blinking led":  # a 6x6 indicator reflection toggling every 0.5 s
        p += rng.normal(0, 2.0, p.shape)
        if (i // 15) % 2:
            p[300:306, 500:506] = 255
    return np.clip(p, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "kind", ["smoothed noise", "row noise", "flicker bands", "hot pixels", "blinking led"])
def test_a_still_scene_is_not_read_whole_again_and_again(kind: str) -> None:
    decoder = CountingDecoder(DecodeConfig())
    rng = np.random.default_rng(1)
    for i in range(FRAMES):
        decoder.decode(Frame(frame(kind, i, rng), i / 30, i))
    areas = np.array(decoder.areas)
    full = int((areas == W * H).sum())
    share = float(areas.sum()) / (FRAMES * W * H)  # frames' worth of pixels read per frame
    # 3 full reads are the scheduled rechecks; before whole-frame rereads, 0.017-0.03
    assert full <= 6 and share <= 0.05, (full, round(share, 3))
