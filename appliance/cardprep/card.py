"""A card's two partitions: what the image is (Python, init mechanism), the wheelhouse on
the root partition, and writing files only when they change (a rerun changes nothing)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

WHEELHOUSE: Final = "/opt/leat-scanner/wheelhouse"
STAMP: Final = ".leat-scanner-wheelhouse"
# pip download --platform takes exact tags (it does not expand manylinux_2_36 to older ones),
# so every manylinux a wheel may carry is listed, up to glibc 2.36 (Bookworm; Trixie has
# 2.41): whatever pip picks runs on both.
DEFAULT_ARCH: Final = "aarch64"
MANYLINUX: Final = ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_31",
                    "manylinux_2_34", "manylinux_2_35", "manylinux_2_36")


def platforms(arch: str) -> list[str]:
    """pip --platform values for a Raspberry Pi OS of CPU `arch` (aarch64)."""
    return [f"{tag}_{arch}" for tag in MANYLINUX]
MIN_PYTHON: Final = (3, 11)
_MARKER: Final = re.compile(r'^python_version\s*(<=|>=|==|!=|<|>)\s*"(\d+)\.(\d+)"$')
_PIN: Final = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")


class CardError(RuntimeError):
    """A card or image that cannot be prepared; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Partitions:
    boot: Path
    root: Path


def check_partitions(boot: Path, root: Path) -> Partitions:
    """Refuse anything that is not a Raspberry Pi OS boot + root partition pair."""
    if not (boot / "cmdline.txt").is_file() or not (boot / "config.txt").is_file():
        raise CardError(f"{boot}: not a Raspberry Pi OS boot partition (no cmdline.txt and "
                        "config.txt): is the card's first partition (bootfs) mounted there?")
    if not (root / "etc" / "os-release").is_file() or not (root / "usr").is_dir():
        raise CardError(f"{root}: not a root partition (no etc/os-release): is the card's "
                        "second partition (rootfs) mounted there?")
    return Partitions(boot, root)


def os_release(root: Path) -> dict[str, str]:
    values = {}
    for line in (root / "etc" / "os-release").read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values


def image_python(root: Path) -> str:
    """The image's python3 as "3.X" (from the /usr/bin/python3 link or /usr/lib/python3.X);
    CardError when there is none or it is older than 3.11."""
    version = ""
    link = root / "usr" / "bin" / "python3"
    if link.is_symlink():
        match = re.fullmatch(r"(?:.*/)?python(3\.\d+)", os.readlink(link))
        version = match[1] if match else ""
    if not version:
        found = sorted((p.name.removeprefix("python") for p in (root / "usr" / "lib").glob(
            "python3.*") if (p / "os.py").exists()), key=lambda v: int(v.split(".")[1]))
        version = found[-1] if found else ""
    if not version:
        raise CardError(f"{root}: no Python 3 in the image (usr/bin/python3): use Raspberry "
                        "Pi OS Lite Bookworm or Trixie")
    if tuple(int(part) for part in version.split(".")) < MIN_PYTHON:
        raise CardError(f"{root}: the image has Python {version}; leat-scanner needs 3.11 or "
                        "newer (Raspberry Pi OS Bookworm or Trixie)")
    return version


def init_format(root: Path) -> str:
    """`cloud-init` when the image has it (Trixie images), else `firstrun` (Bookworm)."""
    for candidate in ("usr/bin/cloud-init", "etc/cloud/cloud.cfg"):
        if (root / candidate).exists():
            return "cloud-init"
    return "firstrun"


def pinned_requirements(constraints: str, python: str) -> list[str]:
    """`name==version` lines of constraints.txt that apply to `python` ("3.11"): the
    python_version markers are evaluated here (pip download would evaluate them for the
    Python running it, not the target)."""
    major, minor = (int(part) for part in python.split("."))
    out = []
    for number, raw in enumerate(constraints.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, _, marker = line.partition(";")
        requirement, marker = requirement.strip(), marker.strip()
        if not _PIN.match(requirement):
            raise CardError(f"constraints.txt line {number}: {requirement!r} is not name==version")
        if marker:
            match = _MARKER.match(marker)
            if match is None:
                raise CardError(f"constraints.txt line {number}: only python_version markers "
                                f"are understood, not {marker!r}")
            wanted = (int(match[2]), int(match[3]))
            have = (major, minor)
            if not {"<": have < wanted, "<=": have <= wanted, ">": have > wanted,
                    ">=": have >= wanted, "==": have == wanted,
                    "!=": have != wanted}[match[1]]:
                continue
        out.append(requirement)
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def missing_wheels(directory: Path, requirements: list[str]) -> list[str]:
    """The pinned requirements without a wheel file in `directory`."""
    names = {p.name.lower() for p in directory.glob("*.whl")}
    missing = []
    for requirement in requirements:
        name, version = requirement.split("==")
        prefix = f"{_norm(name)}-{version.lower()}-"
        if not any(n.startswith(prefix) for n in names):
            missing.append(requirement)
    return missing


def build_requirements(pyproject: str) -> list[str]:
    """[build-system] requires (pip builds leat-scanner on the device in isolation)."""
    match = re.search(r"^\[build-system\]\s*\nrequires\s*=\s*\[([^\]]*)\]", pyproject, re.M)
    if match is None:
        raise CardError("pyproject.toml has no [build-system] requires")
    return [item.strip().strip('"') for item in match[1].split(",") if item.strip()]


def ensure_wheelhouse(
    target: Path, requirements: list[str], build: list[str], *, python: str, arch: str,
    source: Path | None, pip: list[str],
) -> bool:
    """`target` holds a wheel for every pin (and the build requirements) for `python` on
    `arch`: from `source` (a wheelhouse made before) or `pip download`. Made under a
    temporary name and stamped; returns False when it was already complete."""
    stamp = json.dumps({"python": python, "arch": arch,
                        "requirements": sorted(requirements), "build": build}, sort_keys=True)
    if (target / STAMP).is_file() and (target / STAMP).read_text() == stamp \
            and not missing_wheels(target, requirements):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wheelhouse-", dir=target.parent))
    try:
        if source is not None:
            for wheel in source.glob("*.whl"):
                shutil.copy2(wheel, staging / wheel.name)
        else:
            _download(staging, requirements, build, python=python, arch=arch, pip=pip)
        missing = missing_wheels(staging, requirements)
        if missing:
            raise CardError(f"the wheelhouse lacks {', '.join(missing)} for Python {python} "
                            f"on {arch}" + (f" (from {source})" if source else ""))
        (staging / STAMP).write_text(stamp)
        for path in staging.iterdir():
            path.chmod(0o644)
        staging.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def _download(staging: Path, requirements: list[str], build: list[str], *, python: str,
              arch: str, pip: list[str]) -> None:
    tags = [arg for tag in platforms(arch) for arg in ("--platform", tag)]
    common = [*pip, "download", "--quiet", "--disable-pip-version-check", "--no-input",
              "--only-binary=:all:", *tags, "--python-version", python,
              "--implementation", "cp", "--dest", str(staging)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as pins:
        pins.write("\n".join(requirements) + "\n")
        pins.flush()
        for argv in ([*common, "--no-deps", "-r", pins.name], [*common, *build]):
            result = subprocess.run(argv, check=False, capture_output=True, text=True)  # noqa: S603
            if result.returncode != 0:
                tail = "\n".join(result.stderr.strip().splitlines()[-5:])
                raise CardError(f"pip download failed (exit {result.returncode}); check the "
                                f"network to PyPI or pass --wheelhouse-from DIR:\n{tail}")


def write_if_changed(path: Path, text: str, mode: int | None = 0o644) -> bool:
    """Write `text` unless `path` holds it already (and `mode`); True when it changed.
    `mode` None: leave modes alone (FAT has none; chmod there may fail with EPERM)."""
    data = text.encode("utf-8")
    try:
        same_mode = mode is None or (path.stat().st_mode & 0o777) == mode
        if path.read_bytes() == data and same_mode:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.new")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if mode is None else mode)
    try:
        os.write(fd, data)
        if mode is not None:
            os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    staged.replace(path)
    return True


def remove_if_ours(path: Path, mark: str) -> bool:
    """Remove a file an earlier run of prepare-card wrote (it carries `mark`)."""
    try:
        if mark in path.read_text(errors="replace"):
            path.unlink()
            return True
    except FileNotFoundError:
        pass
    return False


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
