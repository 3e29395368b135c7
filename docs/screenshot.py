"""Make docs/visualdl_sparsity.png: VisualDL's scalar page on the logs of examples/digits_cnn.py.

    apt-get install -y chromium            # Debian's package; or pass --chromium PATH
    GLOG_minloglevel=2 python docs/screenshot.py [--epochs 20]

Runs the example into a temporary ``runs/digits`` (the run names match what a README reader sees),
serves it with ``visualdl`` on a free loopback port, renders the page with headless Chromium and saves it
as a palette PNG. The server is stopped by its PID in every case.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "docs", "visualdl_sparsity.png")
# Headless flags measured in shared/PADDLE_NOTES.md; the virtual time budget lets the charts finish drawing.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--virtual-time-budget=15000"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def visualdl_command() -> str:
    beside_python = os.path.join(os.path.dirname(sys.executable), "visualdl")
    found = beside_python if os.access(beside_python, os.X_OK) else shutil.which("visualdl")
    if found is None:
        sys.exit("the `visualdl` command is not installed: pip install visualdl")
    return found


def wait_until_up(url: str, server: subprocess.Popen, log_path: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    with open(log_path, encoding="utf-8", errors="replace") as log:
        sys.exit(f"visualdl did not answer {url} within {timeout_s:.0f} s (exit code {server.poll()}):\n"
                 f"{log.read()}")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs per run of the example")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--window", default="1700,960", help="browser window WIDTH,HEIGHT in pixels")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    env = dict(os.environ, GLOG_minloglevel="2")
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([sys.executable, os.path.join(ROOT, "examples", "digits_cnn.py"), "--epochs",
                        str(args.epochs), "--log-dir", os.path.join("runs", "digits")], cwd=work, env=env,
                       check=True)
        port = free_port()
        server_log = os.path.join(work, "visualdl.out")
        with open(server_log, "wb") as log:
            server = subprocess.Popen([visualdl_command(), "--logdir", os.path.join("runs", "digits"), "--host",
                                       "127.0.0.1", "--port", str(port), "--disable-telemetry", "-L", "en"],
                                      cwd=work, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(f"http://127.0.0.1:{port}/app/api/runs", server, server_log)
            raw = os.path.join(work, "page.png")
            subprocess.run([args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={os.path.join(work, 'chromium')}",
                            f"--window-size={args.window}", f"--screenshot={raw}",
                            f"http://127.0.0.1:{port}/app/scalar"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        finally:
            stop(server)
        Image.open(raw).convert("RGB").quantize(colors=128).save(args.out, optimize=True)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
