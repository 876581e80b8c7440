"""Start `musicprod serve` in a subprocess on 127.0.0.1 and wait until it is ready (tests and benchmarks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests

from harness import OFFLINE_ENV
from server.app import API_KEY_ENV

REPO = Path(__file__).resolve().parent.parent
_URL = re.compile(r"listening on (http://\S+)")


class ServerProcess:
    def __init__(
        self,
        args: list[str],
        env: dict | None = None,
        ready_timeout_s: float = 300.0,
        log_path: str | Path | None = None,
    ):
        full_env = {**os.environ, **OFFLINE_ENV, **(env or {})}
        key = full_env.get(API_KEY_ENV)
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.log_path = Path(log_path) if log_path else None
        self._log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "serve", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        line = self.proc.stdout.readline()
        match = _URL.search(line)
        if not match:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r} (exit {self.proc.returncode}; log {self.log_path})")
        self.url = match.group(1)
        try:
            self.wait_ready(ready_timeout_s)
        except BaseException:  # no `with` block owns it yet: do not leave an orphan server behind
            self.stop()
            raise

    def wait_ready(self, timeout_s: float) -> dict:
        """Poll /info (with the key: /ready tells nobody why a load failed) until the model is loaded."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} while loading (log {self.log_path})")
            try:
                body = requests.get(f"{self.url}/info", headers=self.auth, timeout=5).json()
                if body.get("ready"):
                    self.load_info = body["load_info"]
                    return body
                if body.get("error"):
                    raise RuntimeError(f"model failed to load: {body['error']}")
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy importing
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout_s} s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
