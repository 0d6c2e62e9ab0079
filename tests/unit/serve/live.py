"""A real `tunelab serve` process for tests that drive it over HTTP (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(folder, *extra: str) -> tuple[subprocess.Popen, str]:
    """`tunelab serve FOLDER --served-model-name tiny EXTRA...` on a free port, offline, one
    thread, no keys from the environment; returns once /ready answers 200 (the process and its
    base URL). Fails with the server's output if it exits, or after 120 s."""
    import httpx

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TUNELAB_API_KEYS": ""}
    cmd = [sys.executable, "-m", "tunelab.cli", "serve", str(folder), "--port", str(port)]
    cmd += ["--served-model-name", "tiny", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.25)
