"""The documented limits on sizes and counts, checked in Python before a value reaches the engine.

The C++ engine stores layer widths, shape entries, ``k`` and ``threads`` in 32-bit ``int`` and the
seed in an unsigned 64-bit integer; a Python integer beyond those would reach pybind11 as a cast
error or wrap around. These checks turn such values into a ``ValueError`` (too large) or a
``TypeError`` (not an integer) that names the argument. Model files are checked with them before
anything is built (``_file_checks``), and so are the model's own arguments: the constructor's
(``_config``), the ``threads`` setter, ``fit`` / ``evaluate``'s batch sizes and step counts,
``log_likelihood``'s ``k``, ``sample``'s ``n`` and the layers' sizes (``_checks.positive_int``
bounds them by :data:`INT_MAX` unless told otherwise).

Memory: a result whose size a caller chooses (``sample(n)``, ``decode`` of many latent points, a
plot's grid) is checked against :func:`memory_limit` (what the machine, its container and this
process can still give now) before anything is allocated, and a request beyond it is a
``ValueError`` naming the size (:func:`check_memory`), not a ``MemoryError`` from NumPy half way
or the kernel's out-of-memory killer.
"""

from __future__ import annotations

import numbers
import os

INT_MAX = 2**31 - 1      # the engine's int: widths, shape entries, k, batch sizes
SEED_MAX = 2**64 - 1     # the engine's uint64_t seed
STEP_MAX = 2**63 - 1     # the optimizer's step counter (a C++ long)
MAX_THREADS = 1024       # more OpenMP threads than this is never useful and can exhaust libgomp


def integer(value, name, minimum=1, maximum=INT_MAX):
    """``value`` as an ``int`` in ``[minimum, maximum]`` (``maximum`` None: no upper bound);
    TypeError for a non-integer (bools included), ValueError naming ``name`` and the bound
    otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def threads(value, name="threads"):
    """A thread count in ``[1, MAX_THREADS]``."""
    return integer(value, name, 1, MAX_THREADS)


def seed(value, name="seed"):
    """A seed in ``[0, 2**64 - 1]``."""
    return integer(value, name, 0, SEED_MAX)


def shape(values, name="input_shape"):
    """A tuple of ints in ``[1, INT_MAX]`` whose product is at most ``INT_MAX`` too."""
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        values = (values,)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {type(values).__name__}")
    dims = tuple(integer(v, f"{name} dimension") for v in values)
    if not dims:
        raise ValueError(f"{name} must not be empty")
    size = 1
    for d in dims:
        size *= d
    if size > INT_MAX:
        raise ValueError(f"{name} {dims} has {size} values, more than the engine's {INT_MAX}")
    return dims


# ---- memory -------------------------------------------------------------------------------------
# A container's memory limit, what its processes use now and the statistics that say how much of
# that is file cache it can drop: cgroup v2, then v1.
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
                  "/sys/fs/cgroup/memory.stat"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                  "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                  "/sys/fs/cgroup/memory/memory.stat"))
_MEMINFO = "/proc/meminfo"  # Linux: MemAvailable, SwapFree


def physical_memory():
    """The machine's physical memory in bytes (0 where unknown); the engine's own memory check
    uses the same figure."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return 0


def _read_int(path):
    """The integer a one-number file holds, or None (absent, unreadable, "max", garbage)."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _inactive_file_cache(stat_path):
    """The inactive file cache a cgroup's ``memory.stat`` reports (bytes; 0 where unknown): pages
    the kernel drops before it refuses memory, counted in the usage all the same."""
    try:
        with open(stat_path) as f:
            stats = dict(line.split(None, 1) for line in f if " " in line)
        key = "total_inactive_file" if "total_inactive_file" in stats else "inactive_file"
        return int(stats[key])
    except (OSError, KeyError, ValueError):
        return 0


def _cgroup_left():
    """What the container's memory limit leaves: the limit less what its processes use now, their
    inactive file cache not counted (as ``docker stats`` does; at least 1), the limit alone where
    the usage is unknown, 0 where there is no limit."""
    for limit_path, usage_path, stat_path in _CGROUP_FILES:
        limit = _read_int(limit_path)
        if limit is None:  # "max" (v2) means none; v1 writes a huge number for none
            continue
        usage = _read_int(usage_path)
        if usage is None:
            return limit
        return max(limit - max(usage - _inactive_file_cache(stat_path), 0), 1)
    return 0


def available_memory():
    """What the kernel says this process can still get without the out-of-memory killer:
    ``MemAvailable`` (free memory and the caches it can drop) plus ``SwapFree`` from
    ``/proc/meminfo``, in bytes; 0 where unknown (not Linux)."""
    try:
        with open(_MEMINFO) as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        kib = int(fields["MemAvailable"].split()[0]) + int(fields.get("SwapFree", "0").split()[0])
    except (OSError, KeyError, ValueError, IndexError):
        return 0
    return max(kib, 1) * 1024


def _address_space_left():
    """What ``RLIMIT_AS`` leaves of this process's address space (0: no such limit)."""
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return 0
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 0
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        used = 0
    return max(soft - used, 1)


def memory_limit():
    """The most memory, in bytes, one result may take now: the smallest of the machine's physical
    memory, what the kernel reports available (:func:`available_memory`), what a container's
    cgroup limit leaves and what this process's ``RLIMIT_AS`` leaves, of those that are known;
    0 where none is (then nothing is refused)."""
    limits = [m for m in (physical_memory(), available_memory(), _cgroup_left(),
                          _address_space_left()) if m > 0]
    return min(limits, default=0)


def _gb(nbytes):
    return f"{nbytes / 1e9:.3g} GB"


# Results smaller than this are not checked: reading the limits costs file reads (~70 us), more
# than a one-point decode itself, and the check is there for caller-chosen sizes far beyond the
# machine (a sample or a grid of millions of images), not for results of a few megabytes.
_UNCHECKED_BYTES = 16 << 20


def check_memory(nbytes, what):
    """ValueError when ``what`` would need more than :func:`memory_limit` bytes (``nbytes``, an
    estimate made before anything is allocated); the message names both sizes. Results under
    16 MiB are let through unchecked."""
    if nbytes < _UNCHECKED_BYTES:
        return
    limit = memory_limit()
    if limit and nbytes > limit:
        raise ValueError(f"{what} would need about {_gb(nbytes)} of memory, more than the "
                         f"{_gb(limit)} this process can use (vaecpp._limits.memory_limit())")
