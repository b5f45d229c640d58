"""The operator key: tritonserver's admin protocols answer only requests that carry it.

Whoever reaches a Triton port can, by default, register shared-memory regions (the server's own
python-backend regions included: one inference writing into such a region crashed the server
with SIGSEGV), change its logging and tracing, and read its statistics. Triton restricts a group
of protocols to requests with a header (``--grpc-restricted-protocol`` /
``--http-restricted-api``); every way vidcls starts tritonserver restricts :data:`RESTRICTED`
with the header :data:`HEADER` and the operator key as its value. :data:`OPEN` stays open: what
a classifying client needs (docs/security.md says why model-config is among them).

Where the key comes from:

- ``vidcls serve``: ``--admin-key-file FILE`` (made with a new key when missing), else
  ``$VIDCLS_ADMIN_KEY``, else the key file ``$VIDCLS_ADMIN_KEY_FILE`` or
  ``~/.config/vidcls/admin.key`` (made when missing; mode 0600);
- :class:`vidcls.launcher.TritonServer`: a key of its own per server object (tests, demo,
  benchmarks read it from ``server.admin_key``);
- containers: ``python3 -m vidcls.admin_access exec tritonserver ...`` adds the restriction with the
  key from ``$VIDCLS_ADMIN_KEY`` or the file ``$VIDCLS_ADMIN_KEY_FILE`` and refuses to start
  without one (the serving image's CMD, compose, Kubernetes);
- clients (``vidcls classify --shm``, ``vidcls bench``): ``--admin-key-file``, else
  ``$VIDCLS_ADMIN_KEY``, else the local key file when the server is on this host (loopback).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Sequence

from vidcls.errors import UsageError, VidclsError

log = logging.getLogger(__name__)

# Triton's restricted-protocol key: HTTP requests carry it as this header, gRPC requests as the
# metadata GRPC_PREFIX + HEADER (Triton adds the prefix on its side).
HEADER = "vidcls-admin-key"
GRPC_PREFIX = "triton-grpc-protocol-"
# Every protocol tritonserver knows (2.51 and 26.08 list the same nine in --help) is in one of the
# two groups; tests/test_admin_protocols.py compares them with the binary's own list.
RESTRICTED = ("shared-memory", "model-repository", "statistics", "trace", "logging")
OPEN = ("health", "metadata", "inference", "model-config")
ENV_KEY = "VIDCLS_ADMIN_KEY"
ENV_KEY_FILE = "VIDCLS_ADMIN_KEY_FILE"
KEY_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits
MIN_KEY_CHARS = 16
# Characters that survive Triton's '<protocols>:<header>=<value>' parsing and an HTTP header.
_KEY = re.compile(r"[A-Za-z0-9._~+/-]+")
# What Triton answers a request without the header: gRPC UNAVAILABLE "This protocol is
# restricted, expecting header '...'", HTTP 403 "This API is restricted, expecting header '...'".
REFUSAL = "restricted, expecting header"


class AdminKeyError(UsageError):
    """No usable operator key (exit code 2): the message says where one was looked for."""


def default_key_file() -> Path:
    """``$VIDCLS_ADMIN_KEY_FILE``, else ``$XDG_CONFIG_HOME/vidcls/admin.key`` (``~/.config``)."""
    if os.environ.get(ENV_KEY_FILE):
        return Path(os.environ[ENV_KEY_FILE])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "vidcls" / "admin.key"


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def check_key(key: str, source: str) -> str:
    key = key.strip()
    if len(key) < MIN_KEY_CHARS or not _KEY.fullmatch(key):
        raise AdminKeyError(f"the operator key from {source} must be at least {MIN_KEY_CHARS} characters of "
                            "A-Z a-z 0-9 . _ ~ + / - (make one: python3 -m vidcls.admin_access new FILE)")
    return key


def read_key_file(path: str | os.PathLike) -> str:
    path = Path(path)
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as exc:
        raise AdminKeyError(f"cannot read the operator key file {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        log.warning("the operator key file %s can be read by other users (chmod 600 %s)", path, path)
    return check_key(text, str(path))


def write_key_file(path: str | os.PathLike) -> str:
    """A new key in a new file that only its owner can read (never overwrites one)."""
    path = Path(path)
    key = new_key()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise AdminKeyError(f"cannot write the operator key file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def server_key(key_file: str | os.PathLike | None = None) -> tuple[str, str]:
    """(key, where it came from) for ``vidcls serve``: a key file given or found is read, one
    missing is made; ``$VIDCLS_ADMIN_KEY`` counts when no file is named."""
    if key_file is None and os.environ.get(ENV_KEY):
        return check_key(os.environ[ENV_KEY], f"${ENV_KEY}"), f"${ENV_KEY}"
    path = Path(key_file) if key_file is not None else default_key_file()
    if path.exists():
        return read_key_file(path), str(path)
    return write_key_file(path), f"{path} (new, mode 0600)"


def is_loopback(url: str) -> bool:
    """Whether ``HOST:PORT``, ``[IPV6]:PORT`` or a bare host names this machine."""
    url = url.strip()
    if url.startswith("["):
        host = url[1:url.find("]")] if "]" in url else url[1:]
    else:
        host = url.split(":")[0] if url.count(":") == 1 else url
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_key(key_file: str | os.PathLike | None = None, urls: Sequence[str] = ()) -> str | None:
    """The key a client sends, or None: ``key_file``, else ``$VIDCLS_ADMIN_KEY``, else the local
    key file that ``vidcls serve`` uses when every server in ``urls`` is on this machine (that key
    is never sent elsewhere unasked)."""
    if key_file is not None:
        return read_key_file(key_file)
    if os.environ.get(ENV_KEY):
        return check_key(os.environ[ENV_KEY], f"${ENV_KEY}")
    local = default_key_file()
    if urls and all(is_loopback(u) for u in urls) and local.is_file():
        return read_key_file(local)
    return None


def server_args(key: str) -> list[str]:
    """tritonserver options that put :data:`RESTRICTED` behind ``key`` on gRPC and HTTP."""
    key = check_key(key, "the caller")
    group = f"{','.join(RESTRICTED)}:{HEADER}={key}"
    return [f"--grpc-restricted-protocol={group}", f"--http-restricted-api={group}"]


def grpc_headers(key: str | None) -> dict[str, str] | None:
    return {GRPC_PREFIX + HEADER: key} if key else None


def http_headers(key: str | None) -> dict[str, str]:
    return {HEADER: key} if key else {}


def refused(error: BaseException | str) -> bool:
    """Whether an error is the server refusing a restricted protocol (no key, or a wrong one)."""
    text = error if isinstance(error, str) else (getattr(error, "message", lambda: None)() or str(error))
    return REFUSAL in str(text)


def refusal(what: str, url: str | None = None, sent_key: bool | None = None) -> str:
    """One line for a refused admin call: what was refused, and how to pass the key
    (``sent_key``: whether the refused call carried a key; None when not known)."""
    where = f"{url} refuses {what}" if url else f"the server refused {what}"
    how = {None: "without the right", True: "with a wrong", False: "without an"}[sent_key]
    return (f"{where} {how} operator key: pass the key the server was started with "
            f"(--admin-key-file FILE or ${ENV_KEY}; docs/security.md)")


# ---- containers ------------------------------------------------------------------------------
def key_from_environment() -> tuple[str, str]:
    """(key, source) from ``$VIDCLS_ADMIN_KEY`` or the file ``$VIDCLS_ADMIN_KEY_FILE``; an
    AdminKeyError when neither is set: a container never starts with the admin protocols open."""
    if os.environ.get(ENV_KEY):
        return check_key(os.environ[ENV_KEY], f"${ENV_KEY}"), f"${ENV_KEY}"
    if os.environ.get(ENV_KEY_FILE):
        return read_key_file(os.environ[ENV_KEY_FILE]), os.environ[ENV_KEY_FILE]
    raise AdminKeyError(f"no operator key: set {ENV_KEY}, or mount a key file and set {ENV_KEY_FILE} "
                        "(docs/security.md); tritonserver is not started with its admin protocols open")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m vidcls.admin_access",
                                     description="The operator key of tritonserver's admin protocols.")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("exec", help="exec a tritonserver command line with the admin protocols restricted "
                                      f"(key from ${ENV_KEY} or the file ${ENV_KEY_FILE})")
    run.add_argument("command", nargs=argparse.REMAINDER, help="tritonserver and its options")
    new = sub.add_parser("new", help="write a new key into FILE (mode 0600; never overwrites)")
    new.add_argument("file")
    args = parser.parse_args(argv)
    command: list[str] = []
    try:
        if args.action == "new":
            if Path(args.file).exists():
                raise AdminKeyError(f"{args.file} exists: remove it first to replace the key")
            write_key_file(args.file)
            print(f"new operator key in {args.file}")
            return 0
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            raise AdminKeyError("exec needs a command: python3 -m vidcls.admin_access exec tritonserver ...")
        key, source = key_from_environment()
        print(f"admin protocols ({', '.join(RESTRICTED)}) restricted with the operator key from {source}",
              file=sys.stderr, flush=True)
        os.execvp(command[0], command + server_args(key))
    except VidclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"error: cannot start {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main())
