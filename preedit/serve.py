"""Start, supervise and stop the real Triton server shipped in the nvidia-pytriton wheel.

```
 preedit serve ──> tritonserver --model-repository model_repository/ (127.0.0.1)
                     HTTP :8000   gRPC :8001   Prometheus metrics :8002
                     python backend stub for this Python, PYTHONPATH → this venv's packages
```
`TritonServer` is a context manager used by `preedit run` (embedded server), the tests and
the benchmarks; `preedit serve` runs it in the foreground and forwards SIGINT/SIGTERM.

Locked by default (issue 12): model control `none` on a repository view holding only the asked
models, and Triton's restricted-API flags put model-repository, model-config, shared-memory,
statistics, trace and logging behind a per-server random key (`API_KEY_HEADER`). The launcher
hands the key to its own client (`auth_headers`); `preedit serve` writes it to a 0600 key file.
Health, metadata and inference stay open on loopback. `allow_model_control` opts in to explicit
model control (still keyed). The server gets SIGKILL when its launcher dies (PR_SET_PDEATHSIG), and
a watchdog process (`preedit/_server_watchdog.py`) then unlinks the python-backend shm regions, the
repository view, the temp log and the key file the dead launcher cannot clean up.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import functools
import glob
import json
import logging
import os
import secrets
import shutil
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
from typing import Dict, List, Optional, Sequence

from preedit.errors import ServerError, UsageError
from preedit.heap import server_env
from preedit.install_support import library_env, prepare
from preedit.paths import REPO_ROOT, model_repository

log = logging.getLogger(__name__)

#: Restricted-API key name. Triton checks it as an HTTP header of this name and as the gRPC
#: metadata `triton-grpc-protocol-<name>`.
API_KEY_HEADER = "preedit-key"
#: Admin APIs behind the key. Health, metadata and inference stay open.
RESTRICTED_APIS = ("model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")
#: What perf_analyzer over gRPC needs without a key (its -H headers are ignored for gRPC): servers
#: the perf tools start for themselves leave these open (`preedit serve --open-api` does the same).
PERF_ANALYZER_APIS = ("model-config", "shared-memory", "statistics")
#: Environment variable a `--url` client reads the key from (else the key file of that port).
KEY_ENV = "PREEDIT_TRITON_KEY"
PYTHON_SHM_GLOB = "/dev/shm/triton_python_backend_shm_region_*"
WATCHDOG = Path(__file__).with_name("_server_watchdog.py")  # cleans up if the launcher is SIGKILLed
_KEYS: Dict[str, str] = {}  # gRPC URL -> key of the servers this process started


def key_dir() -> Path:
    """Where `preedit serve` writes key files: $XDG_RUNTIME_DIR/preedit, else ~/.cache/preedit."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "preedit" if base else Path.home() / ".cache" / "preedit"


def key_file(grpc_port: int) -> Path:
    return key_dir() / f"triton-{grpc_port}.key"


def grpc_headers(key: Optional[str]) -> Optional[Dict[str, str]]:
    return {f"triton-grpc-protocol-{API_KEY_HEADER}": key} if key else None


def lookup_key(url: Optional[str]) -> Optional[str]:
    """The key of the server at gRPC `url`: started here, $PREEDIT_TRITON_KEY, or its key file."""
    if not url:
        return None
    if url in _KEYS:
        return _KEYS[url]
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    try:
        port = int(url.rsplit(":", 1)[1])
        return key_file(port).read_text().strip() or None
    except (IndexError, ValueError, OSError):
        return None


def auth_headers(url: Optional[str]) -> Optional[Dict[str, str]]:
    """gRPC headers for the keyed APIs of the server at `url` (None: no key known)."""
    return grpc_headers(lookup_key(url))


def child_env(url: Optional[str]) -> Dict[str, str]:
    """This environment plus $PREEDIT_TRITON_KEY for a child process (`preedit run --url`) that
    talks to the server at `url` (its shm register/unregister are keyed)."""
    env = dict(os.environ)
    key = lookup_key(url)
    if key:
        env[KEY_ENV] = key
    return env


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _pdeathsig(parent: int) -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: dies with the launching thread
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)


def _mapped_python_regions() -> set:
    """Names of Triton python-backend shm regions some live process maps or holds open."""
    held = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    if "triton_python_backend_shm_region_" in line:
                        held.add(os.path.basename(line.split()[-1]))
        except OSError:
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if "triton_python_backend_shm_region_" in target:
                    held.add(os.path.basename(target.split()[0]))
        except OSError:
            continue
    return held


def descendants(pid: int) -> List[int]:
    """`pid` and every process below it (a tritonserver's python-backend stubs), from /proc."""
    out, todo, seen = [], [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def group_members(pgid: int) -> List[int]:
    """Live processes whose process group is `pgid` (from /proc)."""
    members = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid):
            members.append(int(stat.split("/")[2]))
    return members


def regions_of(pid: int) -> set:
    """Paths of the python-backend shm regions `pid` and its descendants (the stubs) map."""
    found = set()
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/maps") as f:
                found.update(line.split()[-1] for line in f if "triton_python_backend_shm_region_" in line)
        except OSError:
            continue
    return found


def sweep_python_regions(candidates: Optional[Sequence[str]] = None, min_age_s: float = 0.0) -> List[str]:
    """Unlink Triton python-backend shm regions that no live process maps (of dead servers).

    `candidates`: only these paths (None: all); `min_age_s`: spare younger ones (a server in start-up)."""
    paths = list(candidates) if candidates is not None else glob.glob(PYTHON_SHM_GLOB)
    if not paths:
        return []
    held = _mapped_python_regions()
    removed = []
    now = time.time()
    for path in paths:
        name = os.path.basename(path)
        try:
            if name in held or now - os.stat(path).st_mtime < min_age_s:
                continue
            os.unlink(path)
            removed.append(path)
        except OSError:
            continue
    if removed:
        log.info("removed %d stale Triton python-backend shm region(s)", len(removed))
    return removed


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on `host:port` now (bind test, as Triton binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _is_stopped(pid: int) -> bool:
    """Process state T (SIGSTOP / frozen)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


_PORT_FIELDS = ("http_port", "grpc_port", "metrics_port")


class _PortTaken(ServerError):
    """A port was free when checked and taken by another process before Triton bound it."""


def owns_listening_port(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP socket listening on `port` (/proc/net/tcp{,6} and its fds)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


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
    allow_model_control: bool = False  # explicit model control (load/unload, still keyed)
    unkeyed_apis: Sequence[str] = ()  # restricted APIs left open (perf_analyzer over gRPC sends no key)
    api_key: Optional[str] = None  # None: a fresh random key per start

    def __post_init__(self) -> None:
        self.model_repository = Path(self.model_repository)
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise UsageError(f"{name.replace('_', '-')} must be in 0..65535, got {port}")


def build_server_cmd(config: ServerConfig, server_bin: Path, backend_dir: Path,
                     repository: Optional[Path] = None) -> List[str]:
    """The tritonserver argument list (pure; no shell involved). `repository`: the view served."""
    cmd = [
        str(server_bin),
        f"--model-repository={repository or config.model_repository}",
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
    if config.allow_model_control:
        cmd.append("--model-control-mode=explicit")
        cmd += [f"--load-model={name}" for name in config.models]
    else:
        cmd.append("--model-control-mode=none")
    keyed = [api for api in RESTRICTED_APIS if api not in set(config.unkeyed_apis)]
    if keyed and config.api_key:
        spec = f"{','.join(keyed)}:{API_KEY_HEADER}={config.api_key}"
        cmd += [f"--http-restricted-api={spec}", f"--grpc-restricted-protocol={spec}"]
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
        self._own_log = False  # a temp log we created: removed on stop unless start-up failed
        self._keep_log = False
        self._view: Optional[Path] = None
        self._regions_before: set = set()
        self._regions_seen: set = set()  # regions our server mapped (noted when a model is ready)
        self._watchdog: Optional[subprocess.Popen] = None
        self.api_key: Optional[str] = None

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
        """Start and wait until ready and ours. Ports given as 0 are picked free; if one is taken by
        another process between that pick and Triton's bind (Triton then runs on without its
        metrics service), the start is retried with new ports (twice at most)."""
        auto = [n for n in _PORT_FIELDS if getattr(self.config, n) == 0]
        for attempt in range(3):
            try:
                return self._start_once()
            except _PortTaken as exc:
                if not auto or attempt == 2:
                    raise
                log.warning("%s; retrying with new free ports", exc)
                for name in auto:
                    setattr(self.config, name, 0)
                if self._own_log and self._log_path is not None:
                    with contextlib.suppress(OSError):
                        self._log_path.unlink()
                self._log_path, self._own_log, self._keep_log, self.proc = None, False, False, None
        raise AssertionError("unreachable")

    def _start_once(self) -> "TritonServer":
        cfg = self.config
        if not cfg.model_repository.is_dir():
            raise ServerError(f"model repository not found: {cfg.model_repository}")
        for name in _PORT_FIELDS:
            if getattr(cfg, name) == 0:
                setattr(cfg, name, free_port(cfg.host))
            elif not port_is_free(cfg.host, getattr(cfg, name)):
                raise ServerError(f"{name.replace('_', '-')} {getattr(cfg, name)} on {cfg.host} is already in use "
                                  f"(another server?); choose another port or 0 for a free one")
        self.api_key = cfg.api_key or secrets.token_urlsafe(24)
        sweep_python_regions(min_age_s=60.0)  # left by servers that died without cleaning up
        self._regions_before = set(glob.glob(PYTHON_SHM_GLOB))
        repository = self._repository_view()
        layout = prepare()
        cmd = build_server_cmd(dataclasses.replace(cfg, api_key=self.api_key), layout.server_bin,
                               layout.backend_dir, repository)
        env = server_env(library_env(layout))  # the stubs too: frame buffers from the heap (preedit.heap)
        env["PYTHONPATH"] = _python_path()
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
            self._own_log = True
        self._log_file = open(self._log_path, "wb")
        log.info("starting Triton on %s (HTTP %d, gRPC %d, metrics %d), log %s",
                 cfg.host, cfg.http_port, cfg.grpc_port, cfg.metrics_port, self._log_path)
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=functools.partial(_pdeathsig, os.getpid()))
        _KEYS[self.grpc_url] = self.api_key
        self._start_watchdog()
        try:
            self._wait_ready(cfg.startup_timeout_s)
            self._check_metrics_port()
            self._note_regions()  # strict readiness: the models (and their stubs) are up
        except BaseException:
            self._keep_log = True
            self.stop()
            raise
        return self

    def _check_metrics_port(self, timeout_s: float = 10.0) -> None:
        """Our server listens on its metrics port (Triton reports a failed bind in its log and runs on,
        and the port then answers with another process's metrics, e.g. another Triton's counters)."""
        port = self.config.metrics_port
        deadline = time.monotonic() + timeout_s
        while not owns_listening_port(self.proc.pid, port):
            failed = self._log_path is not None and "failed to start Metrics service" in \
                self._log_path.read_text(errors="replace")
            if failed or time.monotonic() > deadline:
                raise _PortTaken(f"metrics-port {port} on {self.config.host} was taken by another process while "
                                 f"Triton started; choose another port or 0 for a free one")
            time.sleep(0.1)

    def _start_watchdog(self) -> None:
        """The clean-up process for a launcher that dies without `stop()` (`preedit/_server_watchdog.py`)."""
        try:
            self._watchdog = subprocess.Popen([sys.executable, "-I", "-S", str(WATCHDOG), str(self.proc.pid)],
                                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.warning("no server watchdog (%s): a SIGKILLed launcher leaves its shm regions to the next start", exc)
            return
        self.watch_paths(*[p for p in (self._view, self._log_path if self._own_log else None) if p is not None])

    def _tell_watchdog(self, msg: dict) -> None:
        if self._watchdog is None or self._watchdog.stdin is None:
            return
        try:
            self._watchdog.stdin.write((json.dumps(msg) + "\n").encode())
            self._watchdog.stdin.flush()
        except (OSError, ValueError):
            pass

    def watch_paths(self, *paths) -> None:
        """Files or folders (our own) the watchdog removes if this launcher dies without `stop()`."""
        if paths:
            self._tell_watchdog({"paths": [str(p) for p in paths]})

    def _note_regions(self) -> None:
        """Record the python-backend regions our server (and its stubs) map now: `stop()` and the
        watchdog unlink them even if the server dies first."""
        if self.proc is None:
            return
        new = regions_of(self.proc.pid) - self._regions_seen
        if new:
            self._regions_seen |= new
            self._tell_watchdog({"regions": sorted(new)})

    def _end_watchdog(self) -> None:
        wd = self._watchdog
        if wd is None:
            return
        self._tell_watchdog({"done": True})
        self._watchdog = None
        try:
            wd.stdin.close()
        except OSError:
            pass
        try:
            wd.wait(timeout=5)
        except subprocess.TimeoutExpired:
            wd.kill()
            wd.wait()

    @property
    def grpc_headers(self) -> Optional[Dict[str, str]]:
        """Headers for this server's keyed gRPC APIs (shm register/unregister, repository index)."""
        return grpc_headers(self.api_key)

    @property
    def http_headers(self) -> Dict[str, str]:
        return {API_KEY_HEADER: self.api_key} if self.api_key else {}

    def _repository_view(self) -> Path:
        """The repository Triton sees: with models named and no model control, a temp folder of
        symlinks to only those (model control `none` then serves exactly them)."""
        cfg = self.config
        if not cfg.models or cfg.allow_model_control:
            return cfg.model_repository
        view = Path(tempfile.mkdtemp(prefix="preedit-repo-"))
        self._view = view
        for name in cfg.models:
            src = (cfg.model_repository / name).resolve()
            if not src.is_dir() or "/" in name or name.startswith("."):
                shutil.rmtree(view, ignore_errors=True)
                self._view = None
                raise ServerError(f"model {name!r} not found in {cfg.model_repository}")
            (view / name).symlink_to(src, target_is_directory=True)
        return view

    def log_tail(self, lines: int = 15) -> str:
        if not self._log_path or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace").splitlines()
        interesting = [t for t in text if " E" in t[:2] or "error" in t.lower()] or text
        return "\n".join(interesting[-lines:])

    def _get(self, path: str, timeout_s: float = 2.0) -> int:
        return self._get_keyed(path, None, timeout_s)

    def _get_keyed(self, path: str, key: Optional[str], timeout_s: float = 2.0) -> int:
        req = urllib.request.Request(f"http://{self.http_url}{path}",
                                     headers={API_KEY_HEADER: key} if key else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def is_ours(self) -> bool:
        """The server answering on our port is the one we started: our process is alive and the
        keyed logging API answers our key (another server refuses it)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        if "logging" in set(self.config.unkeyed_apis) or not self.api_key:
            return True
        return self._get_keyed("/v2/logging", self.api_key) == 200

    def is_ready(self) -> bool:
        return self._get("/v2/health/ready") == 200 and self.is_ours()

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_tail()
                error = _PortTaken if "already in use" in tail else ServerError  # taken since the check
                raise error(f"tritonserver exited with code {self.proc.returncode} during start-up: "
                                  f"{tail.splitlines()[-1] if tail else 'no log'} (log: {self._log_path})")
            if self.is_ready():
                log.info("Triton ready at %s", self.grpc_url)
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s (log: {self._log_path})")

    def wait_model_ready(self, name: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._get(f"/v2/models/{name}/ready") == 200:
                self._note_regions()  # now, so stop() can unlink them even if the server dies before it can look
                return
            time.sleep(0.2)
        raise ServerError(f"model {name!r} not ready on {self.http_url} after {timeout_s:.0f} s")

    def stop(self, timeout_s: Optional[float] = None) -> None:
        """SIGTERM, wait Triton's exit timeout (+2 s), then SIGKILL; a frozen (stopped) server is
        killed at once. Ends the python-backend stubs, unlinks their shm regions, the repository
        view and our temp log; idempotent."""
        proc = self.proc
        if timeout_s is None:
            timeout_s = self.config.exit_timeout_s + 2.0
        ours = set(self._regions_seen)
        if proc is not None:
            # The server and its stubs share its process group; stubs can outlive a server that
            # exited on its own (e.g. its metrics port was taken after the models loaded): theirs too.
            for pid in group_members(proc.pid):
                ours |= regions_of(pid)
        if proc is not None and proc.poll() is None:
            if _is_stopped(proc.pid):
                log.warning("tritonserver is frozen (stopped); killing it")
                os.killpg(proc.pid, signal.SIGKILL)
            else:
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
            _KEYS.pop(self.grpc_url, None)
            # Ours (mapped by our server or its stubs a moment ago): unlink once unmapped. Others new
            # since our start (our server died before we could look): only when older than a start-up,
            # so a concurrent server's fresh region is spared.
            deadline = time.monotonic() + 2.0
            while ours and time.monotonic() < deadline:  # killed stubs unmap as they are reaped
                ours = set(ours) - set(sweep_python_regions(sorted(ours)))
                ours = {r for r in ours if os.path.exists(r)}
                if ours:
                    time.sleep(0.1)
            sweep_python_regions(sorted(set(glob.glob(PYTHON_SHM_GLOB)) - self._regions_before), min_age_s=60.0)
        if self._view is not None:
            shutil.rmtree(self._view, ignore_errors=True)
            self._view = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log and not self._keep_log and self._log_path is not None:
            try:
                self._log_path.unlink()
            except OSError:
                pass
        self._end_watchdog()

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
    parser.add_argument("--allow-model-control", action="store_true",
                        help="explicit model control (load/unload over the API, still keyed); off: "
                             "model control none, only the --model models served")
    parser.add_argument("--open-api", action="append", default=[], choices=RESTRICTED_APIS,
                        help="leave this admin API unkeyed (repeatable); perf_analyzer over gRPC needs "
                             + ", ".join(PERF_ANALYZER_APIS))
    parser.add_argument("--key-file", type=Path, default=None,
                        help="where to write the server's API key (mode 0600; default "
                             "$XDG_RUNTIME_DIR/preedit/triton-<grpc port>.key or ~/.cache/preedit/...)")
    parser.add_argument("--triton-arg", action="append", default=[], metavar="ARG",
                        help="extra tritonserver argument, e.g. --triton-arg=--exit-timeout-secs=30 (repeatable)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = setup_args(argparse.ArgumentParser(prog="preedit serve", description=__doc__.split("\n")[0])).parse_args(argv)
    config = ServerConfig(
        model_repository=args.model_repository or model_repository(),
        host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, models=tuple(args.model), log_verbose=args.log_verbose,
        extra_args=tuple(args.triton_arg), allow_model_control=args.allow_model_control,
        unkeyed_apis=tuple(args.open_api),
    )
    server = TritonServer(config)
    stop_requested = []

    def _forward(signum, _frame):
        stop_requested.append(signum)

    old = {s: signal.signal(s, _forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    key_path: Optional[Path] = None
    try:
        server.start()
        key_path = args.key_file or key_file(config.grpc_port)
        _write_private(key_path, server.api_key + "\n")
        server.watch_paths(key_path)
        print(f"serving {config.model_repository} | gRPC {server.grpc_url} | HTTP {server.http_url} | "
              f"metrics {server.metrics_url} | log {server.log_path} | key file {key_path} "
              f"(admin APIs need header {API_KEY_HEADER}; `preedit run --url` reads it, or set {KEY_ENV})",
              flush=True)
        while not stop_requested:
            if server.proc.poll() is not None:
                raise ServerError(f"tritonserver exited with code {server.proc.returncode}: {server.log_tail(3)}")
            time.sleep(0.5)
        print("stopping Triton", file=sys.stderr)
    finally:
        server.stop()
        if key_path is not None:
            try:
                key_path.unlink()
            except OSError:
                pass
        for s, handler in old.items():
            signal.signal(s, handler)
    return 0
