"""Keep freed memory for reuse in the ``gradcheck`` process (glibc only).

A check allocates and frees arrays of megabytes thousands of times (stacks of perturbed
inputs, their outputs, temporaries inside the checked code). glibc hands large blocks
back to the kernel on free and faults fresh pages in on the next allocation, which on a
virtual machine costs as much as the arithmetic: 15-30% of an every-entry softmax check
at n = 1000 and of ``--fast`` at n = 1,000,000 (measured, see benchmarks/). Raising the
mmap and trim thresholds keeps those pages mapped and reused, the same tuning the
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` variables give; peak memory is
unchanged, freed memory is returned when the process exits, which a CLI run does soon.

Only the command-line entry point calls this: a library must not retune its host
process. It does nothing off glibc, or when any ``MALLOC_*`` variable is set (yours win).
"""

from __future__ import annotations

import os

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
SETTINGS = {M_MMAP_THRESHOLD: 64 << 20, M_TRIM_THRESHOLD: 256 << 20, M_TOP_PAD: 64 << 20}


def keep_freed_memory() -> bool:
    """Tune glibc's allocator for many large, short-lived arrays; True if it applied."""
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows)
        return False
    return all(mallopt(option, value) == 1 for option, value in SETTINGS.items())
