"""The local tritonserver launcher (``vidcls serve REPO``): a real tritonserver, without Docker.

Not to be confused with :mod:`vidcls.triton_models`, the python-backend models Triton runs.

The ``nvidia-pytriton`` wheel ships a complete ``tritonserver`` (with the python backend and the
ensemble scheduler). We never run it in place: :func:`server_home` makes an owned copy of its tree
in a cache folder and adds the python-backend stub that matches this interpreter, so the wheel's
files stay untouched and several servers can share one copy.

:class:`TritonServer` is the Python API the tests, the demo and the benchmarks use::

    with TritonServer("model_repository_cpu") as server:   # free ports on 127.0.0.1
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

``vidcls serve`` uses Triton's usual ports instead (gRPC 8001, HTTP 8000, metrics 8002; 0 = a free
port), checks them before starting, and reports a failed start as one line with its cause.

Security defaults: binds to 127.0.0.1, keeps ``--model-control-mode none`` (no remote
load/unload) unless told otherwise, and restricts the admin protocols (shared memory, model
repository, statistics, trace, logging) to requests carrying the operator key
(:mod:`vidcls.admin_access`; docs/security.md).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import secrets
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

from vidcls import admin_access
from vidcls.arguments import existing_dir, port
from vidcls.errors import VidclsError

# The python backend moves every tensor through /dev/shm. Its default region (1 MiB, growing by
# 1 MiB) would be regrown many times by production-size frames (64x256x256x3 = 12.6 MB a video).
SHM_DEFAULT_BYTES = 64 * 1024 * 1024
SHM_GROWTH_BYTES = 64 * 1024 * 1024
SHM_DIR = Path("/dev/shm")
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
# Triton's usual ports: what `vidcls serve` uses unless told otherwise (0 = a free port).
DEFAULT_PORTS = {"grpc": 8001, "http": 8000, "metrics": 8002}
PORT_NAMES = {"grpc": "gRPC", "http": "HTTP", "metrics": "metrics"}


class ServerError(VidclsError):
    """The server did not start or become ready. The message is one line (the cause, and where the
    log is); :attr:`log_tail` holds the end of the server log."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


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


def port_in_use(host: str, number: int) -> bool:
    """Whether something listens on ``host:number`` (a bind attempt; SO_REUSEADDR so that a port
    with only closed connections in TIME_WAIT counts as free, as it does for tritonserver)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host or "0.0.0.0", number))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise ServerError(f"cannot bind port {number} on {host}: {exc.strerror}") from None
    return False


def _client_host(host: str) -> str:
    """The address a local client connects to for a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)


# glog's error lines: "E1201 23:25:01.123456 12345 file.cc:123] message" (2.51 quotes the message).
_ERROR_LINE = re.compile(r"^E\d{4} [\d:.]+\s+\d+ [^\]]+\] ?(.*)$")
# Errors every start on a machine without a GPU logs; they are not why a start failed.
_HARMLESS = ("CudaDriverHelper", "unable to create stream", "DCGM", "NVML", "pinned memory")


def error_cause(log_text: str) -> str | None:
    """Why a start failed, in one line, from tritonserver's log: the first model that failed to
    load (and how many more did), else its last error; None when it logged no error."""
    errors = []
    for line in log_text.splitlines():
        match = _ERROR_LINE.match(line.strip())
        if match:
            message = match.group(1).strip()
            if len(message) > 1 and message[0] == message[-1] == '"':
                message = message[1:-1]
            message = " ".join(message.replace("\\n", " ").split())
            if not any(h in message for h in _HARMLESS):
                errors.append(message)
    if not errors:
        return None
    failed_loads = [e for e in errors if e.startswith("failed to load")]
    cause = failed_loads[0] if failed_loads else errors[-1]
    if len(failed_loads) > 1:
        cause += f" (and {len(failed_loads) - 1} more models)"
    if "unable to find backend library" in cause:
        cause += ("; this tritonserver has only the python backend: serve a cpu repository "
                  "(vidcls export CHECKPOINTS REPO --target cpu)")
    return cause


class TritonServer:
    """A tritonserver process on ``repo``; a context manager (start on enter, stop on exit).

    Ports default to free ones (None or 0) chosen at the first :meth:`start` and kept by
    :meth:`restart`, so clients can reconnect to the same address. The server runs in its own
    process group (python backend stubs included) and :meth:`stop` ends that group only.

    Each server gets its own identity (``--id``, what ``GET /v2`` answers as its name) and its own
    prefix for the python backend's /dev/shm regions: readiness counts only when the answer comes
    from this server (not from another one on the same port), and :meth:`stop` removes exactly
    the regions this server's stubs left behind, whatever way it ended.

    The admin protocols answer only requests with ``admin_key`` (a new random key when None):
    ``vidcls.admin_access.grpc_headers(server.admin_key)`` / ``http_headers(...)`` make the headers.
    """

    def __init__(self, repo: str | Path, grpc_port: int | None = None, http_port: int | None = None,
                 metrics_port: int | None = None, host: str = "127.0.0.1", extra_args: Sequence[str] = (),
                 log_path: str | Path | None = None, log_verbose: int = 0,
                 model_control_mode: str = "none", ready_timeout: float = READY_TIMEOUT_S,
                 admin_key: str | None = None):
        self.repo = Path(repo).resolve()
        self.admin_key = admin_key or admin_access.new_key()
        self.host = host
        self.grpc_port, self.http_port, self.metrics_port = grpc_port or None, http_port or None, metrics_port or None
        self.extra_args = list(extra_args)
        self.log_verbose = log_verbose
        self.model_control_mode = model_control_mode
        self.ready_timeout = ready_timeout
        self.server_id = f"vidcls-{os.getpid()}-{secrets.token_hex(4)}"
        self._own_log_dir, self._made_log_dir = None, False
        if log_path is None:  # a folder of its own, made when the server starts
            self._own_log_dir = Path(tempfile.gettempdir()) / f"vidcls-triton-{self.server_id}"
            log_path = self._own_log_dir / "tritonserver.log"
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._log_start = 0  # where this start's lines begin in the (appended) log

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

    @property
    def shm_prefix(self) -> str:
        """Name prefix of this server's python-backend shared-memory regions in /dev/shm."""
        return self.server_id.replace("-", "_") + "_"

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
            f"--id={self.server_id}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
            f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--grpc-infer-allocation-pool-size={GRPC_ALLOCATION_POOL_SIZE}",
            f"--log-verbose={self.log_verbose}",
        ]
        return args + admin_access.server_args(self.admin_key) + self.extra_args

    def environment(self) -> dict[str, str]:
        _, libs, _ = _pytriton_dirs()
        env = {**MALLOC_ENV, **os.environ}  # the caller's own malloc settings win
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        # The python backend stub runs the first python3 on PATH: make it this (virtualenv) one,
        # so the models import vidcls, numpy, PyAV and onnxruntime from here.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def check_repository(self) -> None:
        """Fail before starting when ``repo`` cannot be a model repository: tritonserver would
        report an empty one as ready, serving nothing."""
        if not self.repo.is_dir():
            raise ServerError(f"model repository {self.repo} is not a folder")
        if not any(self.repo.glob("*/config.pbtxt")):
            deeper = sorted(p.parent.parent for p in self.repo.glob("*/*/config.pbtxt"))
            hint = (f"; did you mean {deeper[0]}?" if deeper
                    else "; make one with 'vidcls export CHECKPOINTS REPO --target cpu'")
            raise ServerError(f"{self.repo} is not a model repository (no MODEL/config.pbtxt in it){hint}")

    def preflight(self) -> None:
        """What must hold before starting: a model repository, and ports. Free ports where none was
        given; given ones must not be in use (else tritonserver would load every model first and
        only then fail to bind)."""
        self.check_repository()
        for key in DEFAULT_PORTS:
            attr = f"{key}_port"
            if getattr(self, attr) is None:
                setattr(self, attr, free_port(self.host if self.host not in ("", "::") else "127.0.0.1"))
            elif port_in_use(self.host or "0.0.0.0", getattr(self, attr)):
                raise ServerError(f"port {getattr(self, attr)} is in use ({PORT_NAMES[key]}, {self.host}): another "
                                  f"server runs there; stop it or choose another {PORT_NAMES[key]} port "
                                  "(0 = a free one)")

    def start(self) -> "TritonServer":
        if self.running():
            return self
        self.preflight()
        if self._own_log_dir is not None and not self._made_log_dir:
            self._own_log_dir.mkdir(mode=0o700)  # fails on a name someone else made
            self._made_log_dir = True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        self._log_start = self._log_file.tell()
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

    def _get(self, path: str) -> tuple[int, bytes] | None:
        """(status, body) of an HTTP GET on this server's HTTP port; None when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    def answers_as_itself(self) -> bool:
        """Whether the HTTP port is answered by this server (its ``--id``), not another one."""
        got = self._get("/v2")
        if got is None or got[0] != 200:
            return False
        try:
            return json.loads(got[1]).get("name") == self.server_id
        except ValueError:
            return False

    def wait_ready(self, timeout: float) -> None:
        """Until this server (checked by its identity) answers /v2/health/ready with 200: strict
        readiness, every model loaded; then the repository's vidcls ensemble must be ready too."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise self._failure(f"tritonserver exited (code {code}) before it was ready")
            ready = self._get("/v2/health/ready")
            if ready is not None and ready[0] == 200 and self.answers_as_itself():
                self._check_ensemble()
                return
            time.sleep(0.25)
        raise self._failure(f"tritonserver not ready after {timeout:.0f} s")

    def _check_ensemble(self) -> None:
        from vidcls.config import REPOSITORY_CONFIG_FILE, VidclsConfig

        config_file = self.repo / REPOSITORY_CONFIG_FILE
        if not config_file.exists():
            return  # not a vidcls repository: every model it has is loaded, nothing more to check
        ensemble = VidclsConfig.load(config_file).serving.ensemble
        got = self._get(f"/v2/models/{ensemble}/ready")
        if got is None or got[0] != 200:
            raise self._failure(f"tritonserver is up but does not serve the ensemble {ensemble!r} of {self.repo}")

    def _failure(self, what: str) -> ServerError:
        """A one-line ServerError: what happened, the first error tritonserver logged, the log."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        cause = error_cause(text)
        return ServerError(f"{what}: {cause or 'no error in its log'} (log: {self.log_path})", self.log_tail())

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds, then remove the
        shared-memory regions its python stubs left (a killed or failed server leaves them)."""
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
            self.remove_shm()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def shm_regions(self) -> list[Path]:
        return sorted(SHM_DIR.glob(self.shm_prefix + "*")) if SHM_DIR.is_dir() else []

    def remove_shm(self) -> None:
        for region in self.shm_regions():
            try:
                region.unlink()
            except OSError:
                pass

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

    def __exit__(self, exc_type, *_) -> None:
        self.stop()
        if exc_type is None:
            self.discard_log()

    def discard_log(self) -> None:
        """Remove the log when this object made its own temporary folder for it (a clean stop);
        a log the caller named, or one after a failure, stays for reading."""
        if self._made_log_dir and not self.running():
            shutil.rmtree(self._own_log_dir, ignore_errors=True)
            self._own_log_dir, self._made_log_dir = None, False

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
    parser.add_argument("repo", type=existing_dir, help="Triton model repository (made by vidcls export)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind gRPC, HTTP and metrics to (0.0.0.0 exposes the server)")
    for key, number in DEFAULT_PORTS.items():
        parser.add_argument(f"--{key}-port", type=port, default=number,
                            help=f"{PORT_NAMES[key]} port (Triton's usual one; 0 = a free port)")
    parser.add_argument("--log-verbose", type=int, default=0, help="tritonserver's log verbosity (0 = quiet)")
    parser.add_argument("--log-file", default=None, help="server log (default: a file in a temporary folder)")
    parser.add_argument("--model-control-mode", default="none", choices=["none", "explicit", "poll"],
                        help="'none' forbids remote model load/unload")
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S,
                        help="seconds to wait for every model to load")
    parser.add_argument("--admin-key-file", default=None, metavar="FILE",
                        help="the operator key that shared memory, model repository, statistics, trace and logging "
                             f"need (made when missing; default: ${admin_access.ENV_KEY}, else "
                             f"${admin_access.ENV_KEY_FILE} or ~/.config/vidcls/admin.key)")
    tls = parser.add_argument_group("gRPC TLS (passed to tritonserver)")
    tls.add_argument("--grpc-use-ssl", action="store_true", help="serve gRPC over TLS")
    tls.add_argument("--grpc-use-ssl-mutual", action="store_true", help="require client certificates")
    tls.add_argument("--grpc-server-cert", help="PEM server certificate")
    tls.add_argument("--grpc-server-key", help="PEM server private key")
    tls.add_argument("--grpc-root-cert", help="PEM CA certificate(s) for client certificates")
    # tritonserver's own options go after '--' (vidcls.cli hands them over untouched), so that
    # vidcls's options work anywhere on the command line.
    parser.set_defaults(passthrough=[])
    parser.passthrough_to = "tritonserver"
    parser.epilog = "tritonserver's own options go after '--', e.g.: vidcls serve REPO -- --log-info=false"


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


def server_from_args(args: argparse.Namespace) -> TritonServer:
    return TritonServer(args.repo, grpc_port=args.grpc_port, http_port=args.http_port,
                        metrics_port=args.metrics_port, host=args.host,
                        extra_args=tls_args(args) + list(getattr(args, "passthrough", [])), log_path=args.log_file,
                        log_verbose=args.log_verbose, model_control_mode=args.model_control_mode,
                        ready_timeout=args.ready_timeout)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt()


def run(args: argparse.Namespace) -> int:
    server = server_from_args(args)
    # SIGTERM and SIGHUP (a closed terminal) end the server like Ctrl-C does (also when started
    # in the background, where the shell leaves SIGINT ignored).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server.preflight()
    server.admin_key, key_source = admin_access.server_key(args.admin_key_file)
    print(f"starting tritonserver on {server.repo} (log: {server.log_path})", flush=True)
    print(f"operator key: {key_source}; clients pass it for shared memory and statistics (--admin-key-file FILE "
          f"or ${admin_access.ENV_KEY})", flush=True)
    try:
        server.start()
        print(f"ready  gRPC {server.grpc_url}  HTTP http://{server.http_url}  metrics {server.metrics_url}"
              f"  pid {server.pid}", flush=True)
        print("Ctrl-C stops the server.", flush=True)
        while server.running():
            time.sleep(0.5)
        code = server._proc.returncode if server._proc is not None else None
        raise server._failure(f"tritonserver exited (code {code})")
    except KeyboardInterrupt:
        print("stopping tritonserver ...", flush=True)
        server.stop()
        server.discard_log()
        return 0
    finally:
        server.stop()
