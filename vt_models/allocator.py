"""One process-wide setting of the C allocator that makes CPU training about 1.7x faster on Linux.

glibc serves a request of 32 MiB or more (its largest mmap threshold) with a fresh ``mmap`` and hands it
back to the kernel on ``free``. A training step frees and re-allocates its large activations every step
(mini_resnet_tsm at batch 16: 32 MiB for the 128 frames x 16 channels x 64 x 64 after its stem), so every
step page-faulted them in again: a third of the CPU time was the kernel's, zeroing pages. With mmap off
and a 1 GiB trim threshold the freed blocks stay in the heap for the next step (16-clip training steps:
28 -> 53 clips/s; peak memory +11 %).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30
# a user's own allocator settings win
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def keep_large_allocations() -> bool:
    """Serve large allocations from the heap and keep them there (glibc only; a no-op elsewhere, or when
    the environment sets the allocator's own variables). Returns whether the setting was applied."""
    if not sys.platform.startswith("linux") or any(os.environ.get(k) for k in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    # musl and others define mallopt as a stub that returns 0: nothing was set
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("allocator: large blocks from the heap, trim above %d bytes: %s", TRIM_THRESHOLD, applied)
    return applied
