"""Run `adaptrec serve` in a real uvicorn process on 127.0.0.1 (a free port) and talk JSON to it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model_dir: Path, home: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ADAPTREC_HOME": str(home), "ADAPTREC_ADMIN_TOKEN": TOKEN}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from adaptrec.cli import main; main()", "serve", "--backbone", str(model_dir),
             "--quantization", "none", "--port", str(self.port), *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not start in 90 s")

    def request(self, method: str, path: str, body=None, token: str | None = None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                payload = r.read().decode()
                status = r.status
                ctype = r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            payload, status, ctype = e.read().decode(), e.code, e.headers.get("content-type", "")
        return status, (json.loads(payload) if "json" in ctype else payload)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=60)
        return out
