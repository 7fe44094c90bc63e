"""The independent peer's virtualenv (var/interop-venv, built once from tests/interop/requirements.txt) and
the peer as a subprocess on 127.0.0.1.

    python -m tests.interop.peer        # build (or check) the virtualenv; what `make interop-venv` runs

The virtualenv is rebuilt when requirements.txt changes (its hash is kept next to it). Building needs the
package index; where it can't be reached, `venv_python()` says why and the interop tests skip."""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REQUIREMENTS = HERE / "requirements.txt"
VENV = Path(os.environ.get("INTEROP_VENV") or REPO / "var" / "interop-venv")
PEER_SCRIPT = HERE / "extrawest_cpo.py"


class VenvUnavailable(Exception):
    """The peer's virtualenv could not be built (no package index reachable, usually)."""


def _requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def venv_python() -> Path:
    """The peer virtualenv's interpreter, building the virtualenv first if it is missing or stale."""
    python = VENV / "bin" / "python"
    marker = VENV / ".requirements.sha256"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with (VENV.parent / ".interop-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time (xdist workers, make and pytest)
        if python.exists() and marker.exists() and marker.read_text().strip() == _requirements_hash():
            return python
        shutil.rmtree(VENV, ignore_errors=True)
        venv.create(VENV, with_pip=True, clear=True)
        command = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
            raise VenvUnavailable(f"pip install -r {REQUIREMENTS.relative_to(REPO)} failed:\n{tail}")
        marker.write_text(_requirements_hash() + "\n")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeerProcess:
    """extrawest_cpo.py running in the peer virtualenv, in a directory of its own (the library reads a
    `.env` from its working directory: not ours)."""

    def __init__(self, python: Path, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.versions_url = f"{self.base}/ocpi/versions"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "peer.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [str(python), str(PEER_SCRIPT), "--port", str(self.port), *args],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE", "REDIS"))},
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout or []], daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"the peer did not start; log:\n{self.log_tail()}") from None
            if line.startswith("READY "):
                break

    def ctl(self, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
        """The peer's /_peer/ control API."""
        method = method or ("GET" if body is None else "POST")
        resp = requests.request(method, f"{self.base}/_peer/{path}", json=body, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def state(self) -> dict[str, Any]:
        return self.ctl("state")

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


def main() -> int:
    started = time.monotonic()
    try:
        python = venv_python()
    except (VenvUnavailable, subprocess.TimeoutExpired, OSError) as exc:
        print(f"The interop peer's virtualenv could not be built; tests/interop will be skipped.\n{exc}")
        return 1
    print(f"interop peer virtualenv ready: {python.parent.parent} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
