"""Argument types the subcommands share: a wrong value is a one-line usage error at parse time.

``argparse`` reports an :class:`argparse.ArgumentTypeError` as ``argument X: <message>``, and
``vidcls.cli`` prints that as one line with exit code 2, before any work (or any slow import)
starts. Torch-free: the client uses these too.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def existing_path(text: str) -> Path:
    """A file or folder that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


def existing_dir(text: str) -> Path:
    path = existing_path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    return path


def existing_file(text: str) -> Path:
    path = existing_path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file")
    return path


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def port(text: str) -> int:
    """A TCP port, 0 meaning "pick a free one"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {value}")
    return value


def check_address(text: str) -> str:
    """``HOST:PORT`` (``[IPv6]:PORT`` too) of a gRPC endpoint; ValueError names what is wrong."""
    address = text.strip()
    if address.startswith("[") and "]:" in address:  # [IPv6]:PORT
        host, _, port_text = address.partition("]:")
        host, sep = host + "]", ":"
    else:
        host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8001)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number 1..65535 (e.g. 127.0.0.1:8001)")
    if any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"{text!r}: the host must be a name or an address, without a scheme or path")
    return address


def address(text: str) -> str:
    try:
        return check_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def config_file(text: str) -> Path:
    """A VidclsConfig JSON file that loads (checked here, so a typo is a usage error up front)."""
    from vidcls.config import VidclsConfig

    path = existing_file(text)
    try:
        VidclsConfig.load(path)
    except (ValueError, TypeError, KeyError) as exc:
        raise argparse.ArgumentTypeError(f"{text} is not a valid vidcls config: {exc}") from None
    return path
