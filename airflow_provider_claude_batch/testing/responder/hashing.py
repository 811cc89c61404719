"""Stable hashes and ids, so the emulator's answers are the same in every process and on every run.

blake2b rather than ``hash()`` (salted per process): a resubmitted batch renders byte-identical
results, and ids such as ``msg_...`` derive from what they identify.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["BASE62", "hash_int", "request_digest", "stable_id"]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_TABLE = bytes(ord(BASE62[b % 62]) for b in range(256))
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(*parts: str) -> bytes:
    """blake2b of the joined parts: fast, stable across processes (unlike ``hash()``)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()


def hash_int(*parts: str) -> int:
    """A stable non-negative integer derived from ``parts``."""
    return int.from_bytes(_digest(*parts)[:8], "big")


def stable_id(prefix: str, *parts: str, length: int = 24) -> str:
    """An id such as ``msg_<24 base62>`` derived from ``parts``, so re-renders are identical."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=length).digest()
    return prefix + digest.translate(_BASE62_TABLE).decode()


def request_digest(params: Mapping[str, Any]) -> str:
    """A digest of a request's parameters (canonical JSON: key order does not matter).

    What an answer is derived from, so the same request gets the same answer, byte for byte, on
    every run and in every process, whatever batch it is in and whenever it is sent.
    """
    return hashlib.blake2b(_CANONICAL.encode(params).encode(), digest_size=16).hexdigest()
