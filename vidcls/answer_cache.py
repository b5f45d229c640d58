"""Repeated uploads: the final answer for a file the server has classified before, by content hash.

The key of a request is the SHA-256 of its VIDEO tensor's bytes together with its shape (file
length, videos per request). SHA-256 is collision-resistant: no two different files with the same
digest are known, and finding one takes about 2^128 work, so different files do not share an
answer, also when someone crafts files on purpose. (Triton's own response cache was checked and
works with this ensemble, but its key is a 64-bit boost::hash_combine over the bytes, which is
neither collision-resistant nor checked against the bytes, and it cannot be turned off per
request: see docs/performance.md.)

:class:`AnswerCache` is a bounded LRU map key → answer, thread-safe, and single-flight: a request
whose file is being classified right now waits for that answer instead of classifying it again.
numpy/hashlib only, so the python-backend model (vidcls.triton_models.cache) and tests use it as is.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

import numpy as np


def content_key(video: np.ndarray) -> bytes:
    """SHA-256 of the tensor's shape and bytes (a [b, nbytes] uint8 VIDEO tensor)."""
    data = np.ascontiguousarray(video)
    h = hashlib.sha256(repr(tuple(data.shape)).encode())
    h.update(data)  # a C-contiguous array is a buffer: no copy
    return h.digest()


class AnswerCache:
    """At most ``entries`` answers (0: nothing is kept), least recently used dropped first.

    ``lookup(key, waiter)`` returns the answer, or None after recording what happens next: the
    first caller of a key that is neither stored nor in flight becomes its owner (``True`` is
    returned in ``owner``) and must call :meth:`finish` with the answer or an exception; later
    callers of the same key get their ``waiter`` called by that :meth:`finish` instead.
    """

    def __init__(self, entries: int):
        self.entries = max(0, int(entries))
        self._answers: OrderedDict[Hashable, Any] = OrderedDict()
        self._waiting: dict[Hashable, list[Callable[[Any], None]]] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = self.joined = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._answers)

    def lookup(self, key: Hashable, waiter: Callable[[Any], None]) -> tuple[Any, bool]:
        """(answer, False) on a hit; (None, True): classify it and :meth:`finish`; (None, False):
        already in flight, ``waiter(answer_or_exception)`` will be called."""
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                self.hits += 1
                return self._answers[key], False
            if key in self._waiting:
                self._waiting[key].append(waiter)
                self.joined += 1
                return None, False
            self._waiting[key] = []
            self.misses += 1
            return None, True

    def finish(self, key: Hashable, answer: Any) -> None:
        """The owner's result: an answer is stored (errors are not) and handed to the waiters."""
        with self._lock:
            waiters = self._waiting.pop(key, [])
            if not isinstance(answer, BaseException) and self.entries:
                self._answers[key] = answer
                self._answers.move_to_end(key)
                while len(self._answers) > self.entries:
                    self._answers.popitem(last=False)
        for waiter in waiters:
            waiter(answer)
