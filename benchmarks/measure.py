"""What a benchmark child measures about itself: wall time, peak RSS growth and threads.

Every measured step runs in a fresh process (see :mod:`benchmarks.child`), so these figures are
the step's own and not what earlier steps left behind. The baseline is taken after every import
and after the input has been built, right before the measured step; the kernel's high-water mark
is reset at that moment (``/proc/self/clear_refs``), so ``ru_maxrss`` afterwards is the peak *of
the step*, not of the imports before it (read from ``VmHWM``; see :func:`peak_rss_bytes`).
"""

from __future__ import annotations

import gc
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

MB = 1024 * 1024


def current_rss_bytes() -> int:
    """Resident set size right now (``/proc/self/statm``), in bytes."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize()


def peak_rss_bytes() -> int:
    """Peak RSS of this process's own memory, in bytes: ``VmHWM`` of ``/proc/self/status``.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss`` alone: Linux folds into it the peak of the memory the
    process had *before exec*, i.e. the parent's at fork time, so a child of a parent holding
    170 MB reports at least 170 MB whatever it does. ``VmHWM`` is the same counter for the
    process's own address space (and the one ``clear_refs`` resets); ``ru_maxrss`` is the
    fallback where ``/proc`` is missing.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    """User plus system CPU time of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark, so the next peak is the measured step's own.

    Returns False where the kernel does not allow it; the peak then also covers the imports, which
    can only make a growth figure smaller, never larger (said in the run's metadata).
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def os_thread_count() -> int:
    """Threads of this process as the kernel counts them (Python's and native ones)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return threading.active_count()


@dataclass
class Measurement:
    """The figures of one measured step."""

    wall_s: float = 0.0
    baseline_rss_mb: float = 0.0
    peak_rss_growth_mb: float = 0.0
    rss_growth_after_mb: float = 0.0
    cpu_s: float = 0.0
    python_threads_before: int = 0
    python_threads_after: int = 0
    os_threads_before: int = 0
    os_threads_after: int = 0
    peak_reset: bool = False
    started: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def elapsed(self) -> float:
        """Seconds since the measured block started (to split a step into phases)."""
        return time.perf_counter() - self.started

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "baseline_rss_mb": self.baseline_rss_mb,
            "peak_rss_growth_mb": self.peak_rss_growth_mb,
            "rss_growth_after_mb": self.rss_growth_after_mb,
            "cpu_s": self.cpu_s,
            "python_threads_before": self.python_threads_before,
            "python_threads_after": self.python_threads_after,
            "os_threads_before": self.os_threads_before,
            "os_threads_after": self.os_threads_after,
            "peak_reset": self.peak_reset,
            **self.extra,
        }


@contextmanager
def measured() -> Iterator[Measurement]:
    """Time the block and record its peak RSS growth over the baseline taken on entry."""
    gc.collect()
    result = Measurement()
    result.python_threads_before = threading.active_count()
    result.os_threads_before = os_thread_count()
    baseline = current_rss_bytes()
    result.peak_reset = reset_peak_rss()
    result.baseline_rss_mb = baseline / MB
    cpu_before = _cpu_seconds()
    result.started = time.perf_counter()
    yield result
    result.wall_s = time.perf_counter() - result.started
    result.cpu_s = _cpu_seconds() - cpu_before
    result.peak_rss_growth_mb = max(peak_rss_bytes() - baseline, 0) / MB
    result.rss_growth_after_mb = (current_rss_bytes() - baseline) / MB
    result.python_threads_after = threading.active_count()
    result.os_threads_after = os_thread_count()
