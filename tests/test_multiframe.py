"""Tests for multi-frame decoding: the aligned region stack and the Decoder over sequences."""

from __future__ import annotations

import numpy as np
import pytest
import zxingcpp

from appliance import samples, sequences
from appliance.config import DebounceConfig, DecodeConfig
from appliance.debounce import Debouncer
from appliance.decode import Decoder
from appliance.multiframe import GLARE_EVERY, MAX_SIDE, SEARCH, RegionStack, _shift, fitted
from appliance.preprocess import with_glare
from appliance.source import Frame

SIZE = (640, 480)
# The widest time budget: reads must not depend on how busy the test machine is.
GENEROUS = DecodeConfig(multiframe_budget_ms=100)


def texture(seed: int = 1) -> np.ndarray:
    """A counter with a code at (210, 110): the region (200, 100, 360, 260) holds it."""
    out = samples.background(SIZE, np.random.default_rng(seed))
    code = samples.render_code("LC-ALIGN123", module_px=4)[:140, :140]
    out[110:110 + code.shape[0], 210:210 + code.shape[1]] = code
    return out


def moved(pixels: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`pixels` with its content moved by (dx, dy) (edges repeated)."""
    return np.roll(np.roll(pixels, dy, axis=0), dx, axis=1)


def reads(decoder: Decoder, seq: sequences.Sequence) -> str:
    """One character a frame: R read, . nothing."""
    out = []
    for i, pixels in enumerate(seq.frames):
        result = decoder.decode(Frame(pixels, i / 30, i))
        out.append("R" if [s.text for s in result.scans] == [seq.expected] else ".")
    return "".join(out)


@pytest.mark.parametrize(("dx", "dy"), [(0, 0), (3, -2), (-SEARCH, SEARCH), (5, 1)])
@pytest.mark.parametrize("sigma", [0.0, 60.0])
def test_shift_finds_how_far_the_region_moved(dx: int, dy: int, sigma: float) -> None:
    base = texture()
    ref = base[100:260, 200:360].astype(np.float32)
    now = moved(base, dx, dy)
    if sigma:
        now = samples.noise(now, np.random.default_rng(2), sigma)
    window = now[100 - SEARCH:260 + SEARCH, 200 - SEARCH:360 + SEARCH]
    assert _shift(ref, window) == (dx, dy)


@pytest.mark.parametrize("glare", [False, True])
def test_every_shift_within_the_search_is_found_to_the_pixel_at_half_size(glare: bool) -> None:
    base = texture()
    ref = base[100:260, 200:360].astype(np.float32)  # 160x160: correlated at half size
    rng = np.random.default_rng(3)
    wrong = []
    for dx in range(-SEARCH, SEARCH + 1):
        for dy in range(-SEARCH, SEARCH + 1):  # odd shifts fall between half-size pixels
            now = samples.noise(moved(base, dx, dy)[100 - SEARCH:260 + SEARCH,
                                                    200 - SEARCH:360 + SEARCH], rng, 30.0)
            if _shift(ref, now, glare=glare) != (dx, dy):
                wrong.append((dx, dy))
    assert wrong == []


@pytest.mark.parametrize(("dx", "dy"), [(1, -1), (-3, 4), (SEARCH, -SEARCH)])
def test_shift_of_a_small_region_is_found_at_full_size(dx: int, dy: int) -> None:
    base = texture()
    ref = base[110:174, 210:274].astype(np.float32)  # 64x64: under the halved size
    window = moved(base, dx, dy)[110 - SEARCH:174 + SEARCH, 210 - SEARCH:274 + SEARCH]
    assert _shift(ref, window) == (dx, dy)


def test_a_stack_follows_a_moving_region_and_keeps_crops_aligned() -> None:
    base = texture()
    stack = RegionStack(depth=4)
    assert stack.start(base, (200, 100, 360, 260))
    for step, (dx, dy) in enumerate([(2, 1), (4, 0), (3, -3), (1, -4), (-2, -2)], start=1):
        assert stack.follow(moved(base, dx, dy), confirmed=False)
        assert stack.box == (200 + dx, 100 + dy, 360 + dx, 260 + dy)
        assert len(stack) == min(step + 1, 4)
    combos = dict(stack.combinations(glare=False))
    assert np.array_equal(combos["newest"], base[100:260, 200:360])  # the last frame, aligned
    assert np.array_equal(combos["mean"], base[100:260, 200:360])  # aligned: no blur at all


@pytest.mark.parametrize("box", [(0, 0, 10, 10), (0, 0, 400, 400), (700, 0, 760, 60)])
def test_a_stack_refuses_regions_too_small_too_large_or_off_the_frame(
    box: tuple[int, int, int, int]
) -> None:
    stack = RegionStack(depth=4)
    assert not stack.start(texture(), box)
    assert stack.box is None and len(stack) == 0


def test_a_region_at_the_frame_edge_is_followed_as_far_as_the_frame_goes() -> None:
    base = texture()
    stack = RegionStack(depth=4)
    assert stack.start(base, (-20, 0, 100, 100))  # clipped to the frame
    assert stack.box == (0, 0, 100, 100)
    assert stack.follow(moved(base, 2, 2), confirmed=True)  # searched as if the frame went on
    assert stack.box == (2, 2, 102, 102)
    assert stack.follow(moved(base, -3, -1), confirmed=True)  # it cannot leave the frame
    assert stack.box == (0, 0, 100, 100)
    assert len(stack) == 3


def test_a_stack_drops_a_region_not_confirmed_for_its_patience() -> None:
    base = texture()
    stack = RegionStack(depth=3)
    assert stack.start(base, (200, 100, 360, 260), patience=2)
    assert stack.follow(base, confirmed=False)
    assert not stack.follow(base, confirmed=False)
    assert stack.box is None
    assert stack.start(base, (200, 100, 360, 260), patience=2)
    for _ in range(5):
        stack.confirm()
        assert stack.follow(base, confirmed=False)


def test_combinations_remove_noise_a_moving_occluder_and_moving_glare() -> None:
    rng = np.random.default_rng(3)
    crop = texture()[100:260, 200:360]
    stack = RegionStack(depth=6)
    frames = []
    for i in range(6):
        frame = texture().copy()
        region = samples.noise(crop, rng, 20)
        if i < 2:  # an occluder over the same spot in two of six frames
            region[10:60, 10:60] = 150
        region = samples.glare(region, (20 + 25 * i, 80), (18, 18), 300)  # a moving glare
        frame[100:260, 200:360] = region
        frames.append(frame)
    stack.start(frames[0], (200, 100, 360, 260))
    for frame in frames[1:]:
        stack.follow(frame, confirmed=True)
    combos = dict(stack.combinations(glare=True))
    assert list(combos) == ["newest", "min", "mean", "median", "max"]
    assert [name for name, _ in stack.combinations(glare=False)] == [
        "newest", "mean", "median", "min", "max"]
    # a guessed region: the newest crop and the mean only; guessed from glare: the minimum
    assert [name for name, _ in stack.combinations(glare=False, every=False)] == [
        "newest", "mean"]
    assert [name for name, _ in stack.combinations(glare=True, every=False)] == [
        "newest", "min"]
    truth = crop.astype(np.float32)
    one = np.abs(frames[5][100:260, 200:360].astype(np.float32) - truth)
    # the median removes the occluder that covered the spot in under half the frames
    assert np.abs(combos["median"][10:60, 10:60] - truth[10:60, 10:60]).mean() < 20
    # the darkest sample never holds the glare that moved on
    assert (combos["min"] >= 250).sum() < (frames[5][100:260, 200:360] >= 250).sum() / 4
    # the mean of six frames has less noise than one, away from occluder and glare
    quiet = np.s_[100:150, 60:150]
    assert (np.abs(combos["mean"][quiet] - truth[quiet]).mean()
            < 0.6 * one[quiet].mean())


def look(stack: RegionStack, frame: np.ndarray) -> None:
    """Follow a region guessed from glare until it is looked at (every GLARE_EVERY frames)."""
    for _ in range(GLARE_EVERY):
        assert stack.follow(frame, confirmed=False)
    assert stack.added


def test_the_low_keeps_the_minimum_of_more_crops_than_the_stack() -> None:
    crop = texture()[100:260, 200:360]
    stack = RegionStack(depth=2)
    frames = []
    for i in range(4):  # the glare covers the left half, then moves off to the right
        frame = texture().copy()
        lit = samples.glare(crop, (40 + 30 * i, 80), (40, 60), 400)
        frame[100:260, 200:360] = lit
        frames.append(frame)
    stack.start(frames[0], (200, 100, 360, 260), patience=100, glared=True)
    assert stack.glared
    look(stack, frames[1])
    assert [name for name, _ in stack.combinations(glare=True)] == [
        "newest", "min", "mean", "max"]  # two crops: the low would be the min
    for frame in frames[2:]:
        look(stack, frame)
    combos = dict(stack.combinations(glare=True))
    assert list(combos)[:3] == ["newest", "low", "min"]
    expected = np.min([f[100:260, 200:360] for f in frames], axis=0)
    assert np.array_equal(combos["low"], expected)
    assert (combos["low"] >= 250).sum() < (combos["min"] >= 250).sum()
    stack.clear()
    assert not stack.glared


def test_the_low_forgets_what_is_older_than_four_stack_depths() -> None:
    base = texture()
    stack = RegionStack(depth=2)
    dark = (base // 2).astype(np.uint8)  # a shadow over the first frame only
    stack.start(dark, (200, 100, 360, 260))
    for _ in range(8):
        stack.follow(base, confirmed=True)
        assert stack.box == (200, 100, 360, 260)
    assert np.array_equal(stack.low(), base[100:260, 200:360])
    with pytest.raises(ValueError, match="no region"):
        RegionStack(depth=2).low()


def test_glare_that_stays_put_is_a_white_sheet_and_glare_that_moves_a_reflection() -> None:
    rng = np.random.default_rng(5)
    box = (200, 100, 360, 260)
    sheet = texture().copy()
    sheet[140:200, 240:320] = 255  # a white sheet: saturated, still
    stack = RegionStack(depth=6)
    stack.start(sheet, box, glared=True)
    for step in range(1, 4):
        for _ in range(GLARE_EVERY):  # looked at every GLARE_EVERY frames only
            assert stack.follow(samples.noise(sheet, rng, 3.0), confirmed=False)
        assert stack.glare_still == step
    assert len(stack) == 1  # frames whose glare stayed put add nothing
    lamp = RegionStack(depth=6)
    crop = texture()[100:260, 200:360]
    added = []
    for i in range(1 + 4 * GLARE_EVERY):  # a reflection crossing the region, 2 pixels a frame
        frame = texture().copy()
        frame[100:260, 200:360] = samples.glare(crop, (40 + 2 * i, 60 + 2 * i), (25, 20), 400)
        if i == 0:
            lamp.start(frame, box, glared=True)
        else:
            assert lamp.follow(samples.noise(frame, rng, 3.0), confirmed=False)
            assert lamp.glare_still == 0
            added.append(lamp.added)
    assert added == ([False] * (GLARE_EVERY - 1) + [True]) * 4  # every GLARE_EVERY-th frame
    assert len(lamp) == 5


def test_a_guessed_box_grows_over_the_glare_beside_it_and_fits_the_frame() -> None:
    frame = np.full((480, 640), 100, np.uint8)
    frame[200:260, 300:380] = 255  # a saturated patch right of the busy box
    # grown over the saturated pixels within two tiles (32 pixels) of it, plus half a tile
    assert with_glare(frame, (220, 190, 310, 270)) == (220, 190, 310 + 30 + 8, 270)
    assert with_glare(frame, (0, 0, 50, 50)) is None  # none within reach
    assert fitted((-10, 300, 100, 490), (480, 640)) == (SEARCH, 300, 100, 480 - SEARCH)
    x0, _, x1, _ = fitted((0, 100, 600, 200), (480, 640))
    assert x1 - x0 == MAX_SIDE and x0 == 300 - MAX_SIDE // 2


def test_glare_away_from_the_busy_tiles_starts_no_guess_and_glare_beside_them_does() -> None:
    rng = np.random.default_rng(5)
    blocks = rng.integers(0, 2, (20, 20), dtype=np.uint8) * 200 + 20  # busy, no finders
    for gap, guessed in ((300, False), (0, True)):
        frame = np.full((480, 640), 110, np.uint8)
        frame[150:270, 100:220] = np.kron(blocks, np.ones((6, 6), np.uint8))
        frame[180:240, 220 + gap:280 + gap] = 255  # a white sheet, far off or touching
        decoder = Decoder(DecodeConfig())
        assert decoder.decode(Frame(samples.noise(frame, rng, 2.0), 0.0, 0)).scans == ()
        assert (decoder._stack.box is not None) is guessed


def test_a_phone_screen_reflecting_a_lamp_is_read_only_from_several_frames() -> None:
    seq = sequences.held_card("screen_glare", 4)
    # no frame shows the whole code: raw zxing-cpp (all formats, all options) reads none
    assert not any(zxingcpp.read_barcodes(p) for p in seq.frames)
    # yet every module is clear of the glare in some frame: the aligned minimum reads
    assert seq.box is not None
    x0, y0, x1, y1 = seq.box
    aligned = [p[y0 + dy:y1 + dy, x0 + dx:x1 + dx] for p, (dx, dy) in zip(
        seq.frames, seq.offsets, strict=True)]
    assert [b.text for b in zxingcpp.read_barcodes(np.min(aligned, axis=0))] == [seq.expected]
    decoder = Decoder(GENEROUS)
    debouncer = Debouncer(DebounceConfig())
    reported: list[str] = []
    seen = reads(decoder, seq)
    text = seq.expected or ""
    for i in range(len(seq.frames)):
        reported += debouncer.observe([text] if seen[i] == "R" else [], i / 30)
    assert "R" in seen[:16] and reported == [seq.expected]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_screen_glare_cards_are_read_in_dim_light_and_dark_mode_alike(seed: int) -> None:
    seq = sequences.held_card("screen_glare", seed)
    assert "R" in reads(Decoder(GENEROUS), seq)


def test_one_crop_is_only_the_newest() -> None:
    stack = RegionStack(depth=4)
    stack.start(texture(), (200, 100, 360, 260))
    assert [name for name, _ in stack.combinations(glare=False)] == ["newest"]
    assert list(RegionStack(depth=4).combinations(glare=False)) == []


@pytest.mark.parametrize(("condition", "seed"),
                         [("finger", 0), ("noise", 2), ("low_contrast", 2), ("glare", 3)])
def test_multi_frame_reads_cards_single_frames_miss(condition: str, seed: int) -> None:
    seq = sequences.held_card(condition, seed)
    single = reads(Decoder(DecodeConfig(multiframe_frames=1)), seq)
    multi = reads(Decoder(GENEROUS), seq)
    assert single.count("R") < multi.count("R")
    assert "R" in multi[:8]


def test_a_card_read_by_multi_frame_is_reported_once() -> None:
    seq = sequences.held_card("finger", 1, length=30)
    decoder = Decoder(GENEROUS)
    debouncer = Debouncer(DebounceConfig())
    reported: list[str] = []
    for i, pixels in enumerate(seq.frames):
        result = decoder.decode(Frame(pixels, i / 30, i))
        reported += debouncer.observe([s.text for s in result.scans], i / 30)
    assert reported == [seq.expected]


def test_multi_frame_positions_are_in_frame_pixels() -> None:
    seq = sequences.held_card("finger", 2)
    decoder = Decoder(GENEROUS)
    assert seq.box is not None
    x0, y0, x1, y1 = seq.box
    for i, pixels in enumerate(seq.frames):
        for scan in decoder.decode(Frame(pixels, i / 30, i)).scans:
            for x, y in scan.position:
                assert x0 - 8 <= x <= x1 + 8 and y0 - 8 <= y <= y1 + 8


def test_glare_on_a_followed_region_advises_less_exposure() -> None:
    seq = sequences.held_card("glare", 3)
    decoder = Decoder(GENEROUS)
    advice = {decoder.decode(Frame(p, i / 30, i)).advice for i, p in enumerate(seq.frames)}
    assert -1.0 in advice
    clean = sequences.held_card("clean", 0)
    decoder = Decoder(DecodeConfig())
    assert {decoder.decode(Frame(p, i / 30, i)).advice
            for i, p in enumerate(clean.frames)} == {0.0}


@pytest.mark.parametrize("kind", sequences.EMPTY_SCENES)
def test_scenes_without_a_code_yield_nothing(kind: str) -> None:
    decoder = Decoder(DecodeConfig())
    for seed in range(4):
        seq = sequences.empty_scene(kind, seed)
        for i, pixels in enumerate(seq.frames):
            result = decoder.decode(Frame(pixels, i / 30, i))
            assert result.scans == () and result.rejected == ()


def test_sequences_are_deterministic_and_check_their_names() -> None:
    a, b = sequences.held_card("glare", 5, 4), sequences.held_card("glare", 5, 4)
    assert a.expected == b.expected and a.box == b.box
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
    with pytest.raises(ValueError, match="unknown condition"):
        sequences.held_card("fog", 1)
    with pytest.raises(ValueError, match="unknown empty scene"):
        sequences.empty_scene("busy", 1)


def test_a_frame_of_another_size_ends_the_region() -> None:
    stack = RegionStack(depth=4)
    assert stack.start(texture(), (200, 100, 360, 260))
    assert not stack.follow(np.zeros((240, 320), np.uint8), confirmed=True)
    assert stack.box is None and len(stack) == 0


def test_a_new_scene_ends_the_followed_region() -> None:
    decoder = Decoder(DecodeConfig())
    finger = sequences.held_card("finger", 0)
    decoder.decode(Frame(finger.frames[0], 0.0, 0))
    assert decoder._stack.box is not None  # located, not read: followed
    other = sequences.empty_scene("still", 1).frames[0]
    assert decoder.decode(Frame(other, 0.04, 1)).scans == ()
    assert decoder._stack.box is None


def test_a_symbol_that_never_decodes_stops_costing_every_still_frame() -> None:
    rng = np.random.default_rng(4)
    code = samples.render_code("LC-BROKEN12", module_px=5)
    q = 4 * 5  # quiet zone
    data = code[q + 45:code.shape[0] - q - 10, q + 45:code.shape[1] - q - 10]
    data[:] = rng.integers(0, 2, data.shape, dtype=np.uint8) * 255  # finders kept, data gone
    scene = samples.background(SIZE, rng)
    scene[100:100 + code.shape[0], 200:200 + code.shape[1]] = code
    reads_in_full: list[int] = []

    class Counting(Decoder):
        def _find(self, pixels: np.ndarray, located: list) -> list:  # type: ignore[type-arg]
            reads_in_full.append(pixels.size)
            return super()._find(pixels, located)

    decoder = Counting(DecodeConfig(multiframe_frames=4))
    for i in range(40):
        result = decoder.decode(Frame(samples.noise(scene, rng, 2.0), i / 30, i))
        assert result.scans == ()
    assert decoder._stack.box is not None  # located: followed
    assert len(reads_in_full) <= 2 * 4 + 1 + 40 // 30 + 1  # then only on change or recheck
