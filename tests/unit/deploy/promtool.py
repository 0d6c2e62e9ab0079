"""Finding promtool for the rules' tests: on PATH (or $PROMTOOL), else extracted from Debian's
`prometheus` package (which carries it) into a cache folder, else None with the reason.

The cache is $TUNELAB_CACHE/promtool or ~/.cache/tunelab/promtool; the package is fetched
with `apt-get download prometheus` (no root needed: it only downloads the .deb) and unpacked
with `dpkg -x` (nothing is installed). GitHub's release tarballs are not used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("TUNELAB_CACHE") or Path.home() / ".cache" / "tunelab"
    return Path(root) / "promtool"


def find_promtool() -> tuple[str | None, str]:
    """(path of a working promtool, "") or (None, why there is none)."""
    for candidate in (os.environ.get("PROMTOOL"), shutil.which("promtool")):
        if candidate and _works(candidate):
            return candidate, ""
    extracted = cache_dir() / "usr" / "bin" / "promtool"
    if not extracted.is_file():
        why = _extract_from_debian(cache_dir())
        if why:
            return None, why
    if _works(str(extracted)):
        return str(extracted), ""
    return None, f"{extracted} (from Debian's prometheus package) does not run"


def _works(exe: str) -> bool:
    try:
        run = subprocess.run([exe, "--version"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


def _extract_from_debian(into: Path) -> str:
    """Download Debian's prometheus .deb and unpack it into `into`; "" or why it failed."""
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        return "promtool is not on PATH and there is no apt-get/dpkg to fetch Debian's prometheus"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            got = subprocess.run(
                ["apt-get", "download", "prometheus"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            return "promtool is not on PATH and `apt-get download prometheus` timed out"
        debs = sorted(Path(tmp).glob("prometheus_*.deb"))
        if got.returncode != 0 or not debs:
            last = (got.stderr.strip().splitlines() or ["no .deb"])[-1]
            return f"promtool is not on PATH and `apt-get download prometheus` failed: {last}"
        into.mkdir(parents=True, exist_ok=True)
        unpack = subprocess.run(["dpkg", "-x", str(debs[0]), str(into)], capture_output=True)
        if unpack.returncode != 0:
            return f"`dpkg -x {debs[0].name}` failed: {unpack.stderr.decode().strip()[:200]}"
    return ""
