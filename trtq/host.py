"""Facts about the machine trtq runs on: CPU name and int8 instructions, available memory."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Optional


def cpu_name() -> str:
    """The CPU model name, for report metadata ("" when unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_memory() -> Optional[int]:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup limit (None: unknown)."""
    found = []
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            found.append(int(limit) - int(used))
    except OSError:
        pass
    return min(found) if found else None


def cpu_int8_instructions() -> Optional[bool]:
    """Whether this x86 CPU has the instructions ONNX Runtime's fast int8 kernels use (VNNI, AMX); None where
    it cannot tell (not Linux, not x86)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))
