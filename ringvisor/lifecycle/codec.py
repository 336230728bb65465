"""Plain data <-> bytes, for the state sections of an image.

A component's state is plain data: ``None``, ``bool``, ``int``, ``str``,
``bytes``, lists (tuples become lists) and dictionaries.  It is written as
canonical JSON (sorted keys, no spaces), so the same state always gives the same
bytes -- which is what lets the snapshot store share identical sections and
lets ``snapshot-diff`` compare them.  What JSON lacks is tagged:

    {"$b": "<base64>"}            bytes
    {"$d": [[key, value], ...]}   a dictionary whose keys are not all strings
    {"$s": [...]}                 a set (sorted)

Anything else (an object, a float, a function) is refused at *save* time with
the path to it, so a component that leaks a live object into its state is
found by the round-trip tests, not by a user restoring an image.
"""

from __future__ import annotations

import base64
import json

from ringvisor.errors import RingvisorError


class StateError(RingvisorError):
    """A state that cannot be encoded or decoded (always a bug or a damaged image)."""


def to_plain(value, path: str = "state"):
    """``value`` with bytes, non-string-keyed dictionaries and sets tagged for JSON."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return {"$s": [to_plain(v, f"{path}{{}}") for v in sorted(value)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k.startswith("$") for k in value):
            return {k: to_plain(v, f"{path}.{k}") for k, v in value.items()}
        return {"$d": [[to_plain(k, f"{path} key"), to_plain(v, f"{path}[{k!r}]")]
                       for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))]}
    raise StateError(f"{path}: {type(value).__name__} is not plain data")


def from_plain(value):
    """The inverse of :func:`to_plain`."""
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, body), = value.items()
            if tag == "$b":
                return base64.b64decode(body)
            if tag == "$d":
                return {_key(from_plain(k)): from_plain(v) for k, v in body}
            if tag == "$s":
                return {_key(from_plain(v)) for v in body}
        return {k: from_plain(v) for k, v in value.items()}
    return value


def _key(k):
    return tuple(k) if isinstance(k, list) else k


def encode(value, path: str = "state") -> bytes:
    return json.dumps(to_plain(value, path), sort_keys=True, separators=(",", ":")).encode()


def decode(data: bytes):
    try:
        return from_plain(json.loads(data.decode()))
    except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
        raise StateError(f"a state section is not valid data ({e})") from None
