"""Time-sortable ids.

`new_id()` returns a 26-character ULID-style id: a 48-bit millisecond timestamp and 80 random
bits, in Crockford base32. Ids sort as strings in creation order, so ordering rows by id is
ordering them by time. Within one process ids are strictly increasing, even for ids made in
the same millisecond or while the wall clock steps backwards (the random part is then
incremented instead of redrawn).
"""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1

_lock = threading.Lock()
_last_ms = 0
_last_random = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id() -> str:
    global _last_ms, _last_random
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms = now_ms
            _last_random = secrets.randbits(_RANDOM_BITS)
        elif _last_random < _RANDOM_MAX:
            _last_random += 1
        else:
            # 2**80 ids in one millisecond cannot happen; borrowing the next millisecond
            # keeps the order promise if it somehow does.
            _last_ms += 1
            _last_random = secrets.randbits(_RANDOM_BITS)
        return _encode(_last_ms, 10) + _encode(_last_random, 16)


def id_time_ms(value: str) -> int:
    """The millisecond timestamp an id was made at."""
    result = 0
    for char in value[:10].upper():
        result = result * 32 + _ALPHABET.index(char)
    return result
