"""deploy/Dockerfile, read statically (no docker here): a slim Python base, torch pinned as
pyproject.toml pins it, `tunelab serve` as a non-root user, a health check on /ready."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), re.sub(r"\s+", " ", rest.strip())))
        pending = ""
    return out


def _torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if re.match(r"torch\s*==", d)).replace(" ", "")


def test_dockerfile_lints():
    steps = instructions(DOCKERFILE.read_text())
    kinds = [k for k, _ in steps]
    assert kinds[0] == "FROM" and kinds.count("FROM") == 1
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", steps[0][1]), steps[0][1]
    runs = [args for k, args in steps if k == "RUN"]
    pin = _torch_pin()
    assert pin == "torch==2.13.0"
    torch_runs = [r for r in runs if re.search(r"\btorch==", r)]
    assert torch_runs and all(pin in r.split() for r in torch_runs), torch_runs
    assert "download.pytorch.org/whl/cpu" in dict(
        a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a
    ).get("TORCH_INDEX", "")
    assert any(re.search(r"pip install (\S+ )*\.(\s|$)", r) for r in runs)  # tunelab itself

    users = [(i, args) for i, (k, args) in enumerate(steps) if k == "USER"]
    assert users, "no USER: the server would run as root"
    last_user_at, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert all(i < last_user_at for i, (k, _) in enumerate(steps) if k == "RUN")
    entry = json.loads(dict(steps)["ENTRYPOINT"])
    assert entry[:2] == ["tunelab", "serve"] and last_user_at < kinds.index("ENTRYPOINT")
    assert "0.0.0.0" in entry and "8000" in entry

    health = dict(steps)["HEALTHCHECK"]
    assert "--start-period=" in health and "CMD" in health
    assert "http://127.0.0.1:8000/ready" in health  # the readiness endpoint, not /health
    assert "8000" in dict(steps)["EXPOSE"]


def test_the_health_check_uses_an_endpoint_the_server_has():
    from tunelab.serve import ModelHolder, ServeSettings, create_app
    from tunelab.serve.auth import KeyChecker

    app = create_app(ServeSettings(), ModelHolder("not-loaded"), KeyChecker({}))
    assert "/ready" in app.openapi()["paths"]


def test_parser():
    steps = instructions('# c\nFROM x\nRUN a \\\n    && b\nUSER 10001\nCMD ["y"]\n')
    assert steps == [("FROM", "x"), ("RUN", "a && b"), ("USER", "10001"), ("CMD", '["y"]')]
