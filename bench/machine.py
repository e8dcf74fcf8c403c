"""The machine line every benchmark prints beside its figures."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path


def describe(*distributions: str, extra: str = "") -> str:
    """`machine: <CPU model>, <cores> cores, <arch>, Python <v>[; <dist> <version>, ...]`."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    line = (f"machine: {cpu}, {os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}")
    versions = []
    for dist in distributions:
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} -")
    if versions:
        line += "; " + ", ".join(versions)
    return f"{line}, {extra}" if extra else line
