"""hw/README.md equals the config defaults; hw/bom.csv is well formed; docs stay in the repo."""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from appliance.config import CameraConfig, FeedbackConfig

HW = Path(__file__).resolve().parent.parent / "hw"
WIRING_HEADER = "| BCM pin | physical pin | part | config key |"
BOM_HEADER = ["ref", "qty", "part", "specification", "notes"]


def _wiring_rows() -> list[list[str]]:
    lines = (HW / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(WIRING_HEADER)  # ValueError: the table is missing
    rows = []
    for line in lines[start + 2 :]:  # skip the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _bom() -> list[dict[str, str]]:
    with (HW / "bom.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file, strict=True))
    assert rows[0] == BOM_HEADER
    assert all(len(row) == len(BOM_HEADER) for row in rows), "every row needs every column"
    return [dict(zip(BOM_HEADER, row, strict=True)) for row in rows[1:]]


def test_hw_wiring_table_equals_feedback_defaults() -> None:
    defaults = FeedbackConfig()
    expected = {
        f"feedback.{name}": getattr(defaults, name)
        for name in FeedbackConfig.model_fields
        if name.endswith("_pin")
    }
    documented = {row[3].strip("`"): int(row[0]) for row in _wiring_rows()}
    assert documented == expected
    assert len(expected) == 3


def test_hw_wiring_physical_pins_match_header() -> None:
    factory = MockFactory()
    try:
        header = factory.board_info.headers["J8"]
        for bcm, physical, part, _key in _wiring_rows():
            assert header.pins[int(physical)].name == f"GPIO{bcm}", part
    finally:
        factory.reset()


def test_hw_readme_states_buzzer_polarity_default() -> None:
    text = (HW / "README.md").read_text(encoding="utf-8")
    active_high = str(FeedbackConfig().buzzer_active_high).lower()
    assert f"feedback.buzzer_active_high = {active_high}" in text


def test_hw_bom_is_well_formed() -> None:
    rows = _bom()
    refs = [row["ref"] for row in rows]
    assert len(refs) == len(set(refs)), "duplicate reference designators"
    for row in rows:
        assert row["ref"] and row["part"] and row["specification"], row
        assert row["qty"].isdigit() and int(row["qty"]) >= 1, row


def test_hw_bom_lists_the_wired_parts() -> None:
    parts = " ".join(row["part"] for row in _bom())
    readme = (HW / "README.md").read_text(encoding="utf-8")
    for needed in ("Camera Module 3", "LED green", "LED red", "active buzzer", "BC337", "1N4148"):
        assert needed in parts
    for resistor in ("180 Ω", "220 Ω", "1 kΩ", "10 kΩ"):  # the same values in both documents
        assert f"resistor {resistor}" in parts
        assert resistor in readme


# --- the docs agree with the config and stand on their own ------------------------------

REPO = HW.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), HW / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_hw_readme_camera_advice_matches_config_defaults() -> None:
    text = " ".join((HW / "README.md").read_text(encoding="utf-8").split())
    camera = CameraConfig()
    lores = f"{camera.lores_width}x{camera.lores_height}"
    assert f"The decoder reads the {lores} **lores** stream by default" in text
    assert "640x480" not in text  # the lores default before it became 16:9
    assert f"**{camera.lens_position} for 20 cm** (the config default)" in text
    assert f"`camera.max_exposure_us = {camera.max_exposure_us}`" in text
    for mains, period in (("50 Hz", "10 ms"), ("60 Hz", "8.33 ms")):  # flicker at twice mains
        assert f"**{mains} mains**" in text and f"multiples of **{period}**" in text


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_docs_link_only_inside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text and "/work/" not in text
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        resolved = (doc.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(REPO), f"{target} leaves the repository"
        assert resolved.exists(), f"{target}: no such file in the repository"


def test_sources_cite_no_file_outside_the_repository() -> None:
    """Code, tests and docs cite Leat's own sources or docs/leat-assumptions.md, never the
    design notes the project was started from (they are not shipped)."""
    outside = ("leat-api.md", "../shared", "/work/shared")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = [
        name for name in tracked
        if name.endswith((".py", ".md", ".yaml", ".sh", ".toml", ".json"))
        and name != "tests/test_hw_docs.py"
        and any(word in (REPO / name).read_text(encoding="utf-8") for word in outside)
    ]
    assert offenders == []
