"""Defaults chosen by the machine: numeric precision, DataLoader workers, how freed memory is kept.

bf16 autocast pays on CPUs with AMX tiles, whose bf16 matrix products run several times faster than fp32.
AVX-512 BF16 alone does not pay: on a 2-core Xeon with it and no AMX a 2048x2048 bf16 product ran at 145
GFLOP/s against 200 in fp32, and a custom-CNN training step was 1.37x faster in fp32. There, and on CPUs
without bf16 instructions (where oneDNN emulates them), fp32 stays. GPUs train in 16-bit mixed precision.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

BF16_CPU_FLAGS = frozenset({"amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of the first CPU listed in `cpuinfo` (empty where there is none)."""
    try:
        with cpuinfo.open() as lines:
            for line in lines:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the kernel lists AMX bf16 tiles among the CPU's flags (Linux; elsewhere False: fp32)."""
    flags = cpu_flags() if flags is None else flags
    return bool(BF16_CPU_FLAGS & flags)


def resolve_device(name: str):
    """`auto`: the first GPU if there is one, else the CPU; any other value as torch names it."""
    import torch

    from medlit.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name}: {err}") from None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def fastest_precision(accelerator: str = "auto", fast_bf16_cpu: bool | None = None, cuda: bool | None = None) -> str:
    """The Lightning `precision` that trains fastest without losing accuracy on `accelerator`.

    GPUs: 16-mixed. CPUs: bf16-mixed with AMX, else 32-true. `auto` is the GPU
    when CUDA is available, as Lightning decides.
    """
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and (cuda_available() if cuda is None else cuda)):
        return "16-mixed"
    if accelerator in ("cpu", "auto"):
        fast = cpu_has_fast_bf16() if fast_bf16_cpu is None else fast_bf16_cpu
        return "bf16-mixed" if fast else "32-true"
    return "32-true"  # other accelerators (mps, tpu): full precision unless asked otherwise


def default_workers(cpus: int | None = None) -> int:
    """DataLoader workers: one per core left over by the training process, at most 4 (loading a cached
    batch is cheap; more workers only compete with the network for the cores)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(4, cpus - 1))


# glibc mallopt() parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next allocation instead of handing it back to the OS.

    PyTorch allocates a CPU tensor's memory with malloc, which maps blocks above 32 MB (a batch of
    activations) from the OS and unmaps them when they are freed, so every training step faults each page
    of every large activation in again: the kernel zeroes hundreds of thousands of pages per step. From the
    heap, freed and trimmed no more, the same memory serves the next step; the process keeps the most it
    has used. Until the heap settles, a freed block whose tail a small allocation took is too small for the
    next block of its size and is passed over, so a process may hold a few times its largest step's memory.
    Returns whether it took effect (glibc on Linux only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
