"""The allocator setting `vt` applies before any work (vt_models.allocator), observed in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# glibc's own count of bytes it holds in mmapped blocks, before and after a 64 MiB array
PROBE = """
import ctypes, json, sys
import numpy as np
from vt_models.allocator import keep_large_allocations

class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
applied = keep_large_allocations() if sys.argv[1] == "apply" else None
before = libc.mallinfo2().hblkhd
block = np.ones(64 * 2**20, np.uint8)
print(json.dumps({"applied": applied, "mmapped": libc.mallinfo2().hblkhd - before}))
"""


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_large_blocks_come_from_the_heap_unless_the_user_set_the_allocator() -> None:
    assert _probe("plain")["mmapped"] >= 64 * 2**20  # glibc's default: a fresh mmap
    assert _probe("apply") == {"applied": True, "mmapped": 0}
    # the user's own glibc settings win: nothing applied, glibc's default behaviour stays
    user = _probe("apply", MALLOC_TRIM_THRESHOLD_="131072")
    assert user["applied"] is False and user["mmapped"] >= 64 * 2**20


def test_vt_applies_it_before_any_command() -> None:
    """Every `vt` command runs with it (its entry point calls it first)."""
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module("vt_models.cli.app").main)
    assert source.index("keep_large_allocations()") < source.index("app()")
