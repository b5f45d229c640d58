"""Errors a user can fix, which the command line reports as one line and an exit code.

Library code raises these (or plain exceptions); ``vidcls.cli.main`` turns a :class:`VidclsError`
into ``error: <message>`` on stderr and its :attr:`~VidclsError.exit_code` (2 = usage error:
the command line names something that cannot work; 1 = the work failed). The message names the
problem and, where there is one, the fix. ``VIDCLS_DEBUG=1`` makes the CLI show tracebacks.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2


class VidclsError(Exception):
    """The work failed for a reason the message explains (exit code 1)."""

    exit_code = EXIT_FAILED


class UsageError(VidclsError):
    """The command line asks for something that cannot work (exit code 2)."""

    exit_code = EXIT_USAGE
