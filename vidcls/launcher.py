"""The local tritonserver launcher (``vidcls serve REPO``): a real tritonserver, without Docker.

Not to be confused with :mod:`vidcls.triton_models`, the python-backend models Triton runs.

The ``nvidia-pytriton`` wheel ships a complete ``tritonserver`` (with the python backend and the
ensemble scheduler). We never run it in place: :func:`server_home` makes an owned copy of its tree
in a cache folder and adds the python-backend stub that matches this interpreter, so the wheel's
files stay untouched and several servers can share one copy.

:class:`TritonServer` is the Python API the tests, the demo and the benchmarks use::

    with TritonServer("model_repository_cpu") as server:   # free ports on 127.0.0.1
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

Security defaults: binds to 127.0.0.1 and keeps ``--model-control-mode none`` (no remote
load/unload) unless told otherwise.
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
from pathlib import Path
from typing import Sequence

# The python backend moves every tensor through /dev/shm. Its default region (1 MiB, growing by
# 1 MiB) would be regrown many times by production-size frames (64x256x256x3 = 12.6 MB a video).
SHM_DEFAULT_BYTES = 64 * 1024 * 1024
SHM_GROWTH_BYTES = 64 * 1024 * 1024
# Triton's gRPC frontend keeps up to this many request objects for reuse (its default is 8); a kept
# object keeps the capacity of the largest upload it ever carried, so eight 500 MB uploads left
# about 4 GB held for good (measured: 8 refused 100 MB uploads took tritonserver from 52 MB to
# 800 MB). 0 frees every request's buffers when it is answered; an allocation per request costs
# nothing next to decoding a video.
GRPC_ALLOCATION_POOL_SIZE = 0
# glibc's malloc raises its mmap threshold to the largest block freed so far (up to 32 MiB), after
# which the gRPC receive buffers of big uploads come from the heap and stay there. A fixed
# threshold keeps blocks above it mmap'ed, so they go back to the system when freed (the server's
# heap then stayed at ~2 uploads' size instead of creeping up; docs/limits.md).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
# Seconds Triton waits for in-flight requests on shutdown, then our grace before SIGKILL.
EXIT_TIMEOUT_S = 10
STOP_GRACE_S = 20.0
READY_TIMEOUT_S = 180.0
LOG_TAIL_LINES = 60


class ServerError(RuntimeError):
    """The server did not start or become ready; the message carries the log tail."""


def _pytriton_dirs() -> tuple[Path, Path, str]:
    """(the wheel's tritonserver tree, its shared-library folder, the wheel version)."""
    try:
        import pytriton
        from importlib.metadata import version
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ServerError("nvidia-pytriton is not installed: pip install 'vidcls[serve]'") from exc
    site = Path(pytriton.__file__).resolve().parent.parent
    tree = site / "pytriton" / "tritonserver"
    libs = site / "nvidia_pytriton.libs"
    if not (tree / "bin" / "tritonserver").exists():
        raise ServerError(f"no tritonserver binary in {tree}")
    return tree, libs, version("nvidia-pytriton")


def server_home(cache_dir: str | Path | None = None) -> Path:
    """An owned copy of the wheel's tritonserver tree with this interpreter's python stub in place.

    Built once per wheel version and Python version, in a temporary folder renamed into place, so
    concurrent callers never see a half-copied tree.
    """
    tree, _, wheel_version = _pytriton_dirs()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    cache = Path(cache_dir or os.environ.get("VIDCLS_CACHE", Path.home() / ".cache" / "vidcls"))
    home = cache / f"tritonserver-{wheel_version}-py{py}"
    if (home / "backends" / "python" / "triton_python_backend_stub").exists():
        return home
    stub = tree / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"the nvidia-pytriton wheel has no python backend stub for Python {py}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=home.name + ".", dir=cache))
    try:
        shutil.copytree(tree, tmp / "tree", symlinks=True)
        shutil.copy2(stub, tmp / "tree" / "backends" / "python" / "triton_python_backend_stub")
        try:
            (tmp / "tree").rename(home)
        except OSError:
            if not home.exists():  # lost a race to another process: theirs is as good as ours
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _client_host(host: str) -> str:
    """The address a local client connects to for a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)


class TritonServer:
    """A tritonserver process on ``repo``; a context manager (start on enter, stop on exit).

    Ports default to free ones chosen at the first :meth:`start` and kept by :meth:`restart`, so
    clients can reconnect to the same address. The server runs in its own process group (python
    backend stubs included) and :meth:`stop` ends that group only.
    """

    def __init__(self, repo: str | Path, grpc_port: int | None = None, http_port: int | None = None,
                 metrics_port: int | None = None, host: str = "127.0.0.1", extra_args: Sequence[str] = (),
                 log_path: str | Path | None = None, log_verbose: int = 0,
                 model_control_mode: str = "none", ready_timeout: float = READY_TIMEOUT_S):
        self.repo = Path(repo).resolve()
        self.host = host
        self.grpc_port, self.http_port, self.metrics_port = grpc_port, http_port, metrics_port
        self.extra_args = list(extra_args)
        self.log_verbose = log_verbose
        self.model_control_mode = model_control_mode
        self.ready_timeout = ready_timeout
        self._own_log_dir = None
        if log_path is None:
            self._own_log_dir = tempfile.mkdtemp(prefix="vidcls-triton-")
            log_path = Path(self._own_log_dir) / "tritonserver.log"
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    # ---- addresses ---------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{_client_host(self.host)}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{_client_host(self.host)}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---- lifecycle ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        home = server_home()
        args = [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={home / 'backends'}",
            f"--model-control-mode={self.model_control_mode}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
            f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
            f"--grpc-infer-allocation-pool-size={GRPC_ALLOCATION_POOL_SIZE}",
            f"--log-verbose={self.log_verbose}",
        ]
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        _, libs, _ = _pytriton_dirs()
        env = {**MALLOC_ENV, **os.environ}  # the caller's own malloc settings win
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        # The python backend stub runs the first python3 on PATH: make it this (virtualenv) one,
        # so the models import vidcls, numpy, PyAV and onnxruntime from here.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def start(self) -> "TritonServer":
        if self.running():
            return self
        if not self.repo.is_dir():
            raise ServerError(f"model repository {self.repo} is not a folder")
        for attr in ("grpc_port", "http_port", "metrics_port"):
            if getattr(self, attr) is None:
                setattr(self, attr, free_port(self.host if self.host not in ("", "::") else "127.0.0.1"))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        self._proc = subprocess.Popen(self.command(), env=self.environment(), stdin=subprocess.DEVNULL,
                                      stdout=self._log_file, stderr=subprocess.STDOUT,
                                      start_new_session=True,  # setsid: its own process group
                                      preexec_fn=_parent_death_signal())
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until /v2/health/ready answers 200 (strict readiness: every model loaded)."""
        deadline = time.monotonic() + timeout
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise ServerError(f"tritonserver exited (code {code}) before it was ready\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {timeout:.0f} s\n{self.log_tail()}")

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None:
            # Stubs left behind by a killed server would hold their shared memory.
            _signal_group(proc.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def memory(self) -> dict[str, int]:
        """Memory the server holds now: :func:`process_memory` of its process tree."""
        if self.pid is None:
            raise ServerError("the server is not running")
        return process_memory(self.pid)

    def restart(self) -> "TritonServer":
        """Stop and start again on the same ports."""
        self.stop()
        return self.start()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "--- tritonserver log (tail) ---\n" + "\n".join(text[-lines:])

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # a forgotten server must not outlive its owner
        try:
            self.stop(grace=5)
        except Exception:
            pass


# ---- memory of a server ------------------------------------------------------------------------
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (tritonserver and its python-backend stubs), from /proc."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def process_memory(pid: int) -> dict[str, int]:
    """Bytes held by the process tree of ``pid`` (Linux /proc): ``rss`` and ``pss`` summed over the
    processes, ``shm`` the /dev/shm files they map (the python backend's regions; pages in use),
    ``processes`` the count.

    RSS counts a shared page in every process that maps it (each python-backend region is mapped
    by the server and by its stub), so the sum over-states the total; PSS divides shared pages
    among their users and is the honest total. ``shm`` is what the regions take from /dev/shm.
    """
    rss = pss = n = 0
    regions: set[str] = set()
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * PAGE_SIZE
            with open(f"/proc/{p}/smaps_rollup") as f:
                pss += next((int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:")), 0)
            with open(f"/proc/{p}/maps") as f:
                regions.update(line.split(None, 5)[5].strip() for line in f
                               if "/dev/shm/" in line and len(line.split(None, 5)) == 6)
            n += 1
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    shm = 0
    for path in regions:
        try:
            shm += os.stat(path.removesuffix(" (deleted)")).st_blocks * 512
        except OSError:
            continue  # unlinked: its pages are counted in the processes' RSS
    return {"rss": rss, "pss": pss, "shm": shm, "processes": n}


def _parent_death_signal():
    """A pre-exec hook: the server gets SIGTERM when its owner dies without stopping it (a killed
    test run, a timeout), so no orphaned server keeps ports and memory. Linux only (None elsewhere).
    The kernel signals when the *thread* that started the server ends: start it from a thread
    that lives as long as the server, e.g. the main thread. prctl is looked up here, in the parent:
    the child between fork and exec must not dlopen."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session made the server its group leader: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass


# ---- CLI ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", help="Triton model repository (vidcls export)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind gRPC, HTTP and metrics to (0.0.0.0 exposes the server)")
    # Free ports by default (printed once ready), so a second server or a test never collides;
    # pass --grpc-port 8001 --http-port 8000 --metrics-port 8002 for Triton's usual ones.
    parser.add_argument("--grpc-port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--http-port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--metrics-port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--log-file", default=None, help="server log (default: a temporary file)")
    parser.add_argument("--model-control-mode", default="none", choices=["none", "explicit", "poll"],
                        help="'none' forbids remote model load/unload")
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S)
    tls = parser.add_argument_group("gRPC TLS (passed to tritonserver)")
    tls.add_argument("--grpc-use-ssl", action="store_true")
    tls.add_argument("--grpc-use-ssl-mutual", action="store_true")
    tls.add_argument("--grpc-server-cert")
    tls.add_argument("--grpc-server-key")
    tls.add_argument("--grpc-root-cert")
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="further tritonserver options after '--'")


def tls_args(args: argparse.Namespace) -> list[str]:
    out = []
    if args.grpc_use_ssl:
        out.append("--grpc-use-ssl=true")
    if args.grpc_use_ssl_mutual:
        out.append("--grpc-use-ssl-mutual=true")
    for flag in ("grpc_server_cert", "grpc_server_key", "grpc_root_cert"):
        value = getattr(args, flag)
        if value:
            out.append(f"--{flag.replace('_', '-')}={Path(value).resolve()}")
    return out


def run(args: argparse.Namespace) -> int:
    extra = [a for a in (args.extra or []) if a != "--"]
    server = TritonServer(args.repo, grpc_port=args.grpc_port or None, http_port=args.http_port or None,
                          metrics_port=args.metrics_port or None, host=args.host,
                          extra_args=tls_args(args) + extra, log_path=args.log_file,
                          log_verbose=args.log_verbose, model_control_mode=args.model_control_mode,
                          ready_timeout=args.ready_timeout)
    # SIGTERM ends the server like Ctrl-C does (also when started in the background, where the
    # shell leaves SIGINT ignored).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"starting tritonserver on {server.repo} (log: {server.log_path})", flush=True)
    try:
        server.start()
        print(f"ready  gRPC {server.grpc_url}  HTTP http://{server.http_url}  metrics {server.metrics_url}"
              f"  pid {server.pid}", flush=True)
        print("Ctrl-C stops the server.", flush=True)
        while server.running():
            time.sleep(0.5)
        print(f"tritonserver exited\n{server.log_tail()}", file=sys.stderr)
        return 1
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping tritonserver ...", flush=True)
        return 0
    finally:
        server.stop()
