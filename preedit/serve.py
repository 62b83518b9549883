"""Start, supervise and stop the real Triton server shipped in the nvidia-pytriton wheel.

```
 preedit serve ──> tritonserver --model-repository model_repository/ (127.0.0.1)
                     HTTP :8000   gRPC :8001   Prometheus metrics :8002
                     python backend stub for this Python, PYTHONPATH → this venv's packages
```
`TritonServer` is a context manager used by `preedit run` (embedded server), the tests and
the benchmarks; `preedit serve` runs it in the foreground and forwards SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from preedit.errors import ServerError, UsageError
from preedit.install_support import library_env, prepare
from preedit.paths import REPO_ROOT, model_repository

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ServerConfig:
    """How to run tritonserver. Ports 0 pick free ports at start."""

    model_repository: Path = field(default_factory=model_repository)
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    models: Sequence[str] = ()  # explicit model control: load only these (empty = all)
    log_verbose: int = 0
    startup_timeout_s: float = 180.0
    python_shm_default_bytes: int = 64 * 1024 * 1024
    exit_timeout_s: int = 5
    extra_args: Sequence[str] = ()

    def __post_init__(self) -> None:
        self.model_repository = Path(self.model_repository)
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise UsageError(f"{name.replace('_', '-')} must be in 0..65535, got {port}")


def build_server_cmd(config: ServerConfig, server_bin: Path, backend_dir: Path) -> List[str]:
    """The tritonserver argument list (pure; no shell involved)."""
    cmd = [
        str(server_bin),
        f"--model-repository={config.model_repository}",
        f"--backend-directory={backend_dir}",
        f"--http-address={config.host}",
        f"--http-port={config.http_port}",
        f"--grpc-address={config.host}",
        f"--grpc-port={config.grpc_port}",
        "--allow-metrics=true",
        "--allow-cpu-metrics=true",
        "--allow-gpu-metrics=false",
        f"--metrics-address={config.host}",
        f"--metrics-port={config.metrics_port}",
        f"--backend-config=python,shm-default-byte-size={config.python_shm_default_bytes}",
        "--backend-config=python,shm-growth-byte-size=16777216",
        f"--log-verbose={config.log_verbose}",
        "--exit-on-error=true",
        # WAR: on SIGTERM Triton waits up to --exit-timeout-secs (default 30) for open
        # connections and in-flight requests; a pipeline stop should not take that long.
        f"--exit-timeout-secs={config.exit_timeout_s}",
        "--strict-readiness=true",
    ]
    if config.models:
        cmd.append("--model-control-mode=explicit")
        cmd += [f"--load-model={name}" for name in config.models]
    cmd += list(config.extra_args)
    return cmd


def _python_path() -> str:
    """Site-packages of this interpreter + the checkout, for the python-backend stub."""
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(REPO_ROOT)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return ":".join(dict.fromkeys(paths))


class TritonServer:
    """The embedded Triton server as a managed child process."""

    def __init__(self, config: Optional[ServerConfig] = None, log_path: Optional[Path] = None) -> None:
        self.config = config or ServerConfig()
        self.proc: Optional[subprocess.Popen] = None
        self._log_path = log_path
        self._log_file = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.config.host}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.config.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.config.host}:{self.config.metrics_port}/metrics"

    @property
    def log_path(self) -> Optional[Path]:
        return self._log_path

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "TritonServer":
        cfg = self.config
        if not cfg.model_repository.is_dir():
            raise ServerError(f"model repository not found: {cfg.model_repository}")
        for name in ("http_port", "grpc_port", "metrics_port"):
            if getattr(cfg, name) == 0:
                setattr(cfg, name, free_port(cfg.host))
        layout = prepare()
        cmd = build_server_cmd(cfg, layout.server_bin, layout.backend_dir)
        env = library_env(layout)
        env["PYTHONPATH"] = _python_path()
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "wb")
        log.info("starting Triton on %s (HTTP %d, gRPC %d, metrics %d), log %s",
                 cfg.host, cfg.http_port, cfg.grpc_port, cfg.metrics_port, self._log_path)
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self._wait_ready(cfg.startup_timeout_s)
        return self

    def log_tail(self, lines: int = 15) -> str:
        if not self._log_path or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace").splitlines()
        interesting = [t for t in text if " E" in t[:2] or "error" in t.lower()] or text
        return "\n".join(interesting[-lines:])

    def _get(self, path: str, timeout_s: float = 2.0) -> int:
        url = f"http://{self.http_url}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def is_ready(self) -> bool:
        return self._get("/v2/health/ready") == 200

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise ServerError(f"tritonserver exited with code {self.proc.returncode} during start-up: "
                                  f"{tail.splitlines()[-1] if tail else 'no log'} (log: {self._log_path})")
            if self.is_ready():
                log.info("Triton ready at %s", self.grpc_url)
                return
            time.sleep(0.25)
        self.stop()
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s (log: {self._log_path})")

    def wait_model_ready(self, name: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._get(f"/v2/models/{name}/ready") == 200:
                return
            time.sleep(0.2)
        raise ServerError(f"model {name!r} not ready on {self.http_url} after {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 30.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop in %.0f s; killing it", timeout_s)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None:
            # Python-backend stubs still inside a model's execute() when the exit timeout ends
            # outlive the server (re-parented to init). They share its process group: end them.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# CLI


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model-repository", type=Path, default=None,
                        help="model repository to serve (default: the project's model_repository/)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--model", action="append", default=[], help="load only this model (repeatable)")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--triton-arg", action="append", default=[], metavar="ARG",
                        help="extra tritonserver argument, e.g. --triton-arg=--exit-timeout-secs=30 (repeatable)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = setup_args(argparse.ArgumentParser(prog="preedit serve", description=__doc__.split("\n")[0])).parse_args(argv)
    config = ServerConfig(
        model_repository=args.model_repository or model_repository(),
        host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, models=tuple(args.model), log_verbose=args.log_verbose,
        extra_args=tuple(args.triton_arg),
    )
    server = TritonServer(config)
    stop_requested = []

    def _forward(signum, _frame):
        stop_requested.append(signum)

    old = {s: signal.signal(s, _forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(f"serving {config.model_repository} | gRPC {server.grpc_url} | HTTP {server.http_url} | "
              f"metrics {server.metrics_url} | log {server.log_path}", flush=True)
        while not stop_requested:
            if server.proc.poll() is not None:
                raise ServerError(f"tritonserver exited with code {server.proc.returncode}: {server.log_tail(3)}")
            time.sleep(0.5)
        print("stopping Triton", file=sys.stderr)
    finally:
        server.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
    return 0
