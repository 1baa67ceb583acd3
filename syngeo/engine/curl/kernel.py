"""The CPU kernel of the linear full-batch epoch (``linear_kernel.cpp``), built on first use.

torch's C++ extension loader compiles it once per machine (20–60 s, with the C++ compiler
torch.compile also needs) into its extensions cache (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``) and loads it in ~0.1 s after that. The build targets the CPU it
runs on, so the cached name carries a digest of the source and of the CPU's feature flags.
Without a compiler the simulator runs its eager torch epochs instead (and says so in a log
warning)."""

from __future__ import annotations

import hashlib
import logging
import platform
import threading
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("linear_kernel.cpp")
_lock = threading.Lock()
_loaded: dict[str, ModuleType | None] = {}


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def build_name() -> str:
    digest = hashlib.sha256(SOURCE.read_bytes() + _cpu_flags().encode()).hexdigest()[:16]
    return f"syngeo_curl_linear_{digest}"


def kernel_loaded() -> bool:
    """Whether this process has the kernel already (so asking for it will not build it)."""
    with _lock:
        return build_name() in _loaded


def linear_kernel() -> ModuleType | None:
    """The compiled module (``linear_epochs``), or None when it cannot be built here."""
    with _lock:
        name = build_name()
        if name not in _loaded:
            try:
                from torch.utils.cpp_extension import load

                _loaded[name] = load(
                    name=name, sources=[str(SOURCE)], verbose=False,
                    extra_cflags=["-O3", "-march=native", "-fopenmp-simd"])
            except Exception as exc:  # no compiler or headers: the eager epochs still work
                logger.warning("could not build the curl CPU kernel (%s); linear epochs run "
                               "as eager torch operations, several times slower", exc)
                _loaded[name] = None
        return _loaded[name]
