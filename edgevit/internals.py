"""Every use of tinygrad's internals, behind one door.

Everywhere else EdgeViT uses tinygrad's public API (Tensor, TinyJit, nn, Device, Context, dtypes).
A few features need tinygrad's private structures, which change between releases:

- the direct CPU replay walks a captured graph and calls its compiled kernels itself;
- the pickled-graph cache renumbers buffers so a loaded graph cannot alias live ones;
- zero-copy input and output reads the CPU allocator's memory;
- the C export renders kernels with a portable C renderer and takes the captured graph apart; the
  explorer's WebGPU engine renders the same kernels' ASTs as WGSL;
- exact training resume reads and restores the random-number counters;
- choosing a backend lists the backends tinygrad knows and makes one the default, points tinygrad's
  WEBGPU backend at dawn-python's Dawn library and asks Dawn which adapter it runs on;
- tinygrad's compile cache (an sqlite file of pickled kernels and search results) is moved into
  EdgeViT's private cache directory, or turned off.

This module was written against tinygrad `SUPPORTED`. With any other version installed, `AVAILABLE`
is False and nothing here touches tinygrad's private structures: the runtime falls back to
tinygrad's own replay and copies, the cache is off, and the C export, the C runtime and exact resume
refuse by name (`require`). `version_problem()` is the one line the command-line tools show for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import importlib.util
import itertools
import multiprocessing.pool
import multiprocessing.synchronize
import os
import platform
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
from tinygrad import Context, Device, Tensor

from edgevit.errors import EdgeViTError
from edgevit.files import PrivateDir, default_cache_dir

SUPPORTED = "0.14.0"
INSTALLED = version("tinygrad")
# backends that hold files or describe other machines: never a place to run the model
NOT_COMPUTE = ("DISK", "NPY", "TINYFS", "NULL", "REMOTE")
# tinygrad 0.14's compute backends in its order of preference: what another version is assumed to know
FALLBACK_BACKENDS = ("METAL", "AMD", "NV", "CUDA", "QCOM", "CL", "CPU", "DSP", "WEBGPU", "PYTHON")
# cached graphs number their buffers from a random point of a range no live process counts into
BUFFER_NUMBERS = 2**48
COMPILE_CACHE = "tinygrad-cache.db"  # tinygrad's compile cache, inside EdgeViT's private cache directory
COMPILE_CACHE_FILES = (COMPILE_CACHE, COMPILE_CACHE + "-wal", COMPILE_CACHE + "-shm")  # sqlite's own companions
MAX_COMPILE_CACHE_BYTES = 512 * 2**20  # a larger one is started afresh (compiled kernels are cheap to remake)

AVAILABLE = INSTALLED == SUPPORTED
if AVAILABLE:
    import tinygrad.engine.realize as tinygrad_realize
    import tinygrad.helpers as tinygrad_helpers
    from tinygrad.codegen import to_program, to_program_cache, to_program_key
    from tinygrad.device import ALL_DEVICES
    from tinygrad.dtype import AddrSpace, _to_np_dtype
    from tinygrad.engine.realize import get_call_arg_uops, get_call_outs_ins, get_runtime, resolve_params
    from tinygrad.helpers import DEV, Target
    from tinygrad.renderer.cstyle import ClangRenderer
    from tinygrad.renderer.wgsl import WGSLRenderer
    from tinygrad.uop.ops import Ops, PatternMatcher, UOp, UPat, buffers


def version_problem() -> str | None:
    """One line when the installed tinygrad is not the one this module was written for."""
    if AVAILABLE:
        return None
    return (
        f"tinygrad {INSTALLED} is installed but EdgeViT was written for tinygrad {SUPPORTED}: the C export, the C runtime, "
        "the graph cache and exact training resume are off, and inference uses tinygrad's slower public path"
    )


def require(feature: str) -> None:
    """Refuse `feature` by name when it needs internals this tinygrad may not have."""
    if not AVAILABLE:
        raise EdgeViTError(f"{feature} needs tinygrad {SUPPORTED} (installed: {INSTALLED}): pip install tinygrad=={SUPPORTED}")


# --- backends -------------------------------------------------------------------------------------
def kill_compile_workers() -> None:
    """Kill tinygrad's pool of compile and kernel-search processes, if it started one, without waiting
    on the pool: a command that stops on a signal must leave no process behind, and the pool's own
    terminate() can wait forever on workers the same signal killed while they held its queue's lock."""
    try:
        from tinygrad.engine import worker
    except ImportError:  # another tinygrad: nothing known to stop
        return
    pool = getattr(worker, "worker_pool", None)
    handler = getattr(pool, "_worker_handler", None)
    if handler is not None:  # the pool replaces dead workers: it must not start new ones now
        handler._state = multiprocessing.pool.TERMINATE
    for process in getattr(pool, "_pool", None) or []:
        with contextlib.suppress(Exception):
            process.kill()
    # the pool's queues hold named semaphores that only a normal interpreter exit unlinks; a command
    # stopping on a signal leaves by os._exit, and the resource tracker would warn of them on stderr
    for queue in (getattr(pool, name, None) for name in ("_inqueue", "_outqueue", "_change_notifier")):
        for lock in (getattr(queue, "_rlock", None), getattr(queue, "_wlock", None)):
            if name := getattr(getattr(lock, "_semlock", None), "name", None):
                with contextlib.suppress(Exception):
                    multiprocessing.synchronize.SemLock._cleanup(name)


def end_compile_workers() -> None:
    """End tinygrad's pool of compile workers while they are healthy, for a command that compiled
    and now runs on (a server): idle workers that a later signal kills would be replaced, mid-exit."""
    try:
        from tinygrad.engine import worker
    except ImportError:
        return
    worker.terminate_worker_pool()


def known_backends() -> list[str]:
    """Every compute backend tinygrad knows, in its own order of preference."""
    if not AVAILABLE:
        return list(FALLBACK_BACKENDS)
    extra = sorted(d for d in Device._devices if d not in ALL_DEVICES and d not in NOT_COMPUTE and d != "PYTHON")
    # PYTHON (the emulator) last: it computes correctly at about a thousandth of the speed
    return [d for d in ALL_DEVICES if d in Device._devices] + extra + ["PYTHON"]


def make_default(device: str) -> None:
    """Make `device` the backend new tensors go to (what tinygrad's `DEV` environment variable does)."""
    if AVAILABLE:
        DEV.value = device
        return
    with contextlib.suppress(AttributeError):
        import tinygrad.helpers

        tinygrad.helpers.DEV.value = device


# --- WebGPU (Dawn) --------------------------------------------------------------------------------
# dawn-python (import name pydawn) ships one Dawn library per platform, named per machine
# (libwebgpu_dawn_x86_64.so): tinygrad looks for a plain libwebgpu_dawn.so in system folders, so
# without WEBGPU_PATH it does not find this one
DAWN_LIBRARIES = {
    "Linux": "libwebgpu_dawn_{machine}.so",
    "Darwin": "libwebgpu_dawn_{machine}.dylib",
    "Windows": "libwebgpu_dawn.dll",
}
ADAPTER_KINDS = {1: "discrete GPU", 2: "integrated GPU", 3: "CPU"}  # WGPUAdapterType; anything else is "unknown"


def dawn_library() -> str | None:
    """The Dawn library dawn-python installed for this platform, or None. Found without importing
    pydawn: its import loads the library (and opens a Dawn instance of its own)."""
    try:
        spec = importlib.util.find_spec("pydawn")
    except (ImportError, ValueError):
        return None
    pattern = DAWN_LIBRARIES.get(platform.system())
    if spec is None or not spec.submodule_search_locations or pattern is None:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "lib" / pattern.format(machine=platform.machine())
    return str(path) if path.is_file() else None


def prepare_webgpu() -> None:
    """Set WEBGPU_PATH to dawn-python's library unless the user set it. tinygrad reads it once, when
    the WEBGPU backend is first opened: this runs when EdgeViT is imported, before that can happen.

    Then, without a desktop session (no XDG_RUNTIME_DIR), turn off Mesa's Vulkan device-select layer
    unless the user steers it: it asks the Wayland compositor which GPU drives the display, and
    without one libwayland writes "error: XDG_RUNTIME_DIR is invalid" to stderr on every open.
    Dawn picks its adapter by its own preference (high performance), so the order it changes is moot.
    """
    if not os.environ.get("WEBGPU_PATH") and (path := dawn_library()) is not None:
        os.environ["WEBGPU_PATH"] = path
    steered = any(k in os.environ for k in ("NODEVICE_SELECT", "MESA_VK_DEVICE_SELECT", "DRI_PRIME"))
    if os.environ.get("WEBGPU_PATH") and not os.environ.get("XDG_RUNTIME_DIR") and not steered:
        os.environ["NODEVICE_SELECT"] = "1"


prepare_webgpu()


class Adapter(NamedTuple):
    """The hardware a WebGPU device runs on, as Dawn reports it."""

    name: str  # the driver's name for it: "llvmpipe (LLVM 15.0.6, 256 bits)", "NVIDIA GeForce RTX 3060"
    vendor: str  # "mesa", "nvidia"; may be empty
    backend: str  # the native API under Dawn: Vulkan, Metal, D3D12, OpenGLES... or Null (no driver at all)
    kind: str  # "discrete GPU", "integrated GPU", "CPU" (an emulation: llvmpipe, SwiftShader) or "unknown"

    def __str__(self) -> str:
        vendor = f"{self.vendor} " if self.vendor and self.vendor.lower() not in self.name.lower() else ""
        return f"{vendor}{self.name} ({self.backend}, {self.kind})"


@functools.cache  # a survey asks twice (is it Dawn's Null backend? is it a CPU?); an open device keeps its adapter
def adapter(device: str) -> Adapter | None:
    """The adapter an opened WEBGPU device runs on; None for other backends, or where this tinygrad's
    WEBGPU device does not say. `device` must already open."""
    if not AVAILABLE or not device.upper().startswith("WEBGPU"):
        return None
    try:
        from tinygrad.runtime.autogen import webgpu
        from tinygrad.runtime.ops_webgpu import from_wgpu_str

        info = webgpu.WGPUAdapterInfo()
        if webgpu.wgpuDeviceGetAdapterInfo(Device[device].device_res, info) != webgpu.WGPUStatus_Success:
            return None
        try:
            backend = webgpu.enum_WGPUBackendType.get(info.backendType, "unknown").removeprefix("WGPUBackendType_")
            kind = ADAPTER_KINDS.get(info.adapterType, "unknown")
            return Adapter(from_wgpu_str(info.device), from_wgpu_str(info.vendor), backend, kind)
        finally:
            webgpu.wgpuAdapterInfoFreeMembers(info)
    except (ImportError, AttributeError, TypeError, UnicodeDecodeError):  # another WEBGPU runtime: it does not say
        return None


# --- tinygrad's compile cache ---------------------------------------------------------------------
class _CompileCache:
    """The process's decision: where tinygrad's compile cache is (the directory stays open: the path
    tinygrad is given resolves through its descriptor)."""

    decided = False
    directory: PrivateDir | None = None
    level: int | None = None  # tinygrad's CACHELEVEL before EdgeViT first changed it


def use_private_compile_cache(directory: PrivateDir | None) -> str | None:
    """Point tinygrad's compile cache at `directory` (a checked private directory), or turn it off
    (None, or the directory is read-only or holds a cache file that is not this user's own).

    tinygrad keeps compiled kernels and BEAM results as pickles in an sqlite file, by default
    $XDG_CACHE_HOME/tinygrad/cache.db, opened with no ownership check: anyone who can write that file
    runs code in this process. tinygrad reads the location when it first opens the file, so this works
    any time before the first compile (an open connection is closed and reopened). The environment
    carries the same choice to child processes. Returns the path given to tinygrad, or None.
    """
    _CompileCache.decided, _CompileCache.directory = True, directory
    path = _prepared_cache_file(directory) if directory is not None else None
    if path is None:
        os.environ["CACHELEVEL"] = "0"
    else:
        os.environ["CACHEDB"] = str(directory.path / COMPILE_CACHE)
    if AVAILABLE:
        if _CompileCache.level is None:
            _CompileCache.level = tinygrad_helpers.CACHELEVEL.value
        if tinygrad_helpers._db_connection is not None:
            tinygrad_helpers._db_connection.close()
            tinygrad_helpers._db_connection = None
            tinygrad_helpers._db_tables.clear()
        tinygrad_helpers.CACHELEVEL.value = 0 if path is None else _CompileCache.level
        if path is not None:
            tinygrad_helpers.CACHEDB = path
    else:
        with contextlib.suppress(AttributeError):
            import tinygrad.helpers

            tinygrad.helpers.CACHELEVEL.value = 0  # another version: no compile cache rather than an unchecked one
    return path


def _forgiving(function, fallback):
    """tinygrad's compile-cache reads and writes made harmless: a full disk, a locked or damaged
    database costs a recompile, never the command (tinygrad raises sqlite3.Error from inside a compile)."""

    def call(table, key, *rest, **kw):
        try:
            return function(table, key, *rest, **kw)
        except sqlite3.Error:
            return fallback(rest[0] if rest else None)

    return call


if AVAILABLE:  # every module that bound tinygrad's cache functions by name gets the forgiving ones
    import tinygrad.codegen.opt.search as tinygrad_search
    import tinygrad.device as tinygrad_device

    for _module in (tinygrad_search, tinygrad_device):
        _module.diskcache_get = _forgiving(tinygrad_helpers.diskcache_get, lambda _: None)
        _module.diskcache_put = _forgiving(tinygrad_helpers.diskcache_put, lambda value: value)


def ensure_private_compile_cache() -> None:
    """`use_private_compile_cache` on the default cache directory, unless this process chose already."""
    if not _CompileCache.decided:
        directory = default_cache_dir()
        use_private_compile_cache(PrivateDir.open(directory) if directory is not None else None)


def _prepared_cache_file(directory: PrivateDir) -> str | None:
    """The path tinygrad should open: the cache file exists, is this user's own, private, a database,
    and not over its size cap (else it is started afresh). None when none can be had."""
    if not directory.writable:
        return None
    sizes = dict((name, size) for name, size, _ in directory.usage() if name in COMPILE_CACHE_FILES)
    if sum(sizes.values()) > MAX_COMPILE_CACHE_BYTES:
        for name in COMPILE_CACHE_FILES:
            directory.remove(name)
    if not directory.claim(COMPILE_CACHE):
        return None
    path = directory.descriptor_path(COMPILE_CACHE)
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA schema_version").fetchone()  # reads the header only: nothing is unpickled
    except sqlite3.DatabaseError:  # damaged (a killed write, a full disk): start afresh
        for name in COMPILE_CACHE_FILES:
            directory.remove(name)
        if not directory.claim(COMPILE_CACHE):
            return None
    return path


# --- buffers --------------------------------------------------------------------------------------
def renumber_buffers() -> bool:
    """Number this process's new buffers from a random point far from any other process's.

    tinygrad numbers buffers with a per-process counter, and unpickling a graph reuses any live buffer
    with the same number: a cached graph's buffers must come from a range no other process will be
    using, or loading it would silently wire in the wrong weights. False when that cannot be done
    (then graphs must not be cached).
    """
    if not AVAILABLE:
        return False
    UOp.unique_num = itertools.count(BUFFER_NUMBERS + secrets.randbelow(BUFFER_NUMBERS))
    return True


def host_view(t: Tensor) -> np.ndarray | None:
    """A numpy array over a realized tensor's own memory, on backends whose memory the host shares
    (CPU); None elsewhere. Reading and writing it skips tinygrad's scheduler, which costs
    milliseconds per call next to a graph that runs in a few."""
    if not AVAILABLE:
        return None
    try:
        buf = t.uop.base.buffer
        device = Device[buf.device]
        device.synchronize()
        memory = device.allocator._as_buffer(buf.get_buf(buf.device))
    except (AttributeError, AssertionError, NotImplementedError):  # not a plain buffer of its own
        return None
    return np.frombuffer(memory, _to_np_dtype(buf.dtype), buf.size).reshape(t.shape)


def is_captured(jit) -> bool:
    """Whether a TinyJit has captured its graph (it runs eagerly once, captures on its second call)."""
    return getattr(jit, "captured", None) is not None


def jit_outputs(jit) -> tuple[np.ndarray, ...] | None:
    """Host views of a captured graph's output buffers (their addresses never change), or None."""
    if not AVAILABLE or not is_captured(jit):
        return None
    views = tuple(host_view(t) for t in jit.captured.ret)
    return None if any(v is None for v in views) else views


# --- direct CPU replay ----------------------------------------------------------------------------
class HostBuffer(NamedTuple):
    """One argument of a captured CPU kernel, in host memory that never moves."""

    dtype: np.dtype
    count: int  # elements
    address: int
    written: bool  # some kernel of the graph stores to it (an activation), else only read (a weight)


class Launch(NamedTuple):
    """One kernel launch: the compiled function and one argument tuple per core it is split over."""

    fxn: object
    per_core: list[tuple]
    name: str  # tinygrad's function name
    buffers: list[HostBuffer]  # its arguments, in order
    writes: tuple[int, ...]  # which of `buffers` it stores to


def cpu_launches(jit, inputs: tuple[Tensor, ...]) -> list[Launch] | None:
    """The captured graph as direct calls into its compiled CPU kernels, or None where it is not that.

    What tinygrad's `CPUProgram.__call__` does, with every address resolved once: a captured graph's
    buffers (weights, planned scratch, the reused inputs, the outputs) never move. `inputs` are the
    realized tensors the graph will read, in the order the jitted function takes them.
    """
    if not AVAILABLE or not is_captured(jit):
        return None
    launches = []
    try:
        calls = []
        for call in jit.captured.linear.src:
            program = call.src[0]
            if program.op is not Ops.PROGRAM or any(v.expr != "core_id" for v in program.arg.vars):
                return None
            resolved = resolve_params(call, tuple(t.uop.base for t in inputs))
            calls.append((program, [resolved[i].buffer.ensure_allocated() for i in program.arg.globals]))
        written = {id(bufs[program.arg.globals.index(slot)]) for program, bufs in calls for slot in program.arg.outs}
        for program, bufs in calls:
            runtime = get_runtime(bufs[0].device, program)
            if type(runtime).__name__ != "CPUProgram" or runtime.lvp:
                return None
            (threads, *_), _ = program.arg.launch_dims({})
            args = [b.get_buf(b.device).va_addr for b in bufs] + [0] * len(program.arg.vars)
            per_core = []
            for tid in range(threads):  # a kernel tinygrad split over cores: one launch per core
                if "core_id" in runtime.runtimevars:
                    args[runtime.runtimevars["core_id"]] = tid
                per_core.append(tuple(ctypes.c_uint64(a) for a in args))
            buffers = [
                HostBuffer(np.dtype(_to_np_dtype(b.dtype)), b.size, b.get_buf(b.device).va_addr, id(b) in written) for b in bufs
            ]
            writes = tuple(program.arg.globals.index(slot) for slot in program.arg.outs)
            launches.append(Launch(runtime.fxn, per_core, program.arg.function_name, buffers, writes))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return launches


# --- the C export ---------------------------------------------------------------------------------
# tinygrad compiles each kernel alone, freestanding, without math.h: this prelude makes a kernel
# compile there; `kernel_source` strips it again
KERNEL_PRELUDE = (
    '#define INFINITY __builtin_inff()\n#define NAN __builtin_nanf("")\n'
    "#define sqrtf __builtin_sqrtf\n#define truncf __builtin_truncf\n#define exp2f __builtin_exp2f\n"
)
C_TYPES = {
    np.dtype(np.float32): "float",
    np.dtype(np.int32): "int",
    np.dtype(np.int8): "signed char",
    np.dtype(np.uint8): "unsigned char",
}


def c_type(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype not in C_TYPES:
        raise EdgeViTError(f"the graph uses {dtype.name}, which the C export does not support")
    return C_TYPES[dtype]


if AVAILABLE:

    def _render_bitcast(ctx, x: UOp) -> str | None:
        if x.addrspace in (AddrSpace.GLOBAL, AddrSpace.LOCAL):
            return None  # a pointer cast, which ClangRenderer already writes as plain C
        # C99 reinterprets bits through a union; a compound literal keeps it one expression
        source, target = c_type(_to_np_dtype(x.src[0].dtype)), c_type(_to_np_dtype(x.dtype))
        return f"(((union {{ {source} from; {target} to; }}){{ .from = {ctx[x.src[0]]} }}).to)"

    class PortableC(ClangRenderer):
        """tinygrad's C renderer restricted to C99 any compiler takes: gcc, clang, embedded toolchains.

        Scalar loads instead of clang vector types (compilers vectorise plain loops themselves), math.h
        instead of __builtin_*, a union instead of __builtin_bit_cast, no thread index, and const on every
        buffer a kernel only reads, so the weights can stay in flash.
        """

        supports_float4 = False
        has_threads = False
        # BEAM's cache is keyed by the kernel, the device and this suffix: without one of its own, the
        # export would replay opts searched for the tinygrad runtime's renderer, THREAD among them
        # (a KernelOptError here once a runtime graph of the same shape had been searched)
        suffix = "portable-c99"
        infinity, nan = "INFINITY", "NAN"
        code_for_op: ClassVar[dict] = {
            **ClangRenderer.code_for_op,
            Ops.SQRT: lambda x, dtype: f"sqrtf({x})",
            Ops.TRUNC: lambda x, dtype: f"truncf({x})",
            Ops.EXP2: lambda x, dtype: f"exp2f({x})",
        }
        string_rewrite = PatternMatcher([(UPat(Ops.BITCAST, name="x"), _render_bitcast)]) + ClangRenderer.string_rewrite

        def render_kernel(self, function_name, kernel, bufs, uops, prefix=None) -> str:
            return KERNEL_PRELUDE + super().render_kernel(function_name, kernel, bufs, uops, prefix)

        def _render_dtype(self, dtype, sz=1, addrspace=AddrSpace.ALU, mutable=True, override_ptr=False, shape=None):
            rendered = super()._render_dtype(dtype, sz, addrspace, mutable, override_ptr, shape)
            read_only_argument = addrspace == AddrSpace.GLOBAL and not mutable and not override_ptr
            return "const " + rendered if read_only_argument else rendered


@contextlib.contextmanager
def portable_c_kernels() -> Iterator[dict]:
    """Inside, the CPU backend renders new kernels with `PortableC` (it picks its renderer on every compile).

    exp2 is written out as tinygrad's own polynomial (TRANSCENDENTAL=2) rather than a call to libm's
    exp2f: plain arithmetic that the compiler vectorizes across GELU and softmax (measured on the w8a8
    export: 0.144 -> 0.125 ms per image), and one libm function fewer on a microcontroller.
    Yields the kernels' ASTs as scheduled, before the CPU's optimisations (for `take_apart`: another
    renderer can compile the same kernels, `wgsl_kernel`).
    """
    require("the C export")
    device = Device["CPU"]
    original, compile_all = device.renderers, tinygrad_realize.lower_and_compile
    asts: dict = {}

    def recording(linear):
        # every kernel compiled (or found in tinygrad's cache), by the sink its program keeps
        todo = [a for c in linear.toposort() if c.op is Ops.CALL and (a := tinygrad_realize._get_call_to_compile(c))]
        compiled = compile_all(linear)
        for ast, renderer in todo:
            asts[to_program_cache[to_program_key(ast, renderer)].src[0]] = ast
        return compiled

    device.renderers, tinygrad_realize.lower_and_compile = [PortableC], recording
    try:
        with Context(TRANSCENDENTAL=2):
            yield asts
    finally:
        device.renderers, tinygrad_realize.lower_and_compile = original, compile_all


@dataclass(eq=False)
class Argument:
    """One buffer a captured kernel reads or writes; the same buffer is the same object in every call."""

    dtype: np.dtype
    count: int  # elements
    kind: str  # "input", "output", "scratch" (written by the graph) or "constant" (only read)
    data: np.ndarray | None = None  # constants only
    name: str | None = None  # constants: the state-dict name, where it is a model parameter; inputs: input0, input1...


@dataclass
class KernelCall:
    name: str  # tinygrad's function name: its prefix says what kind of kernel it is
    source: str  # C, without the freestanding prelude
    arguments: list[Argument]
    writes: tuple[int, ...]  # positions in `arguments` the kernel stores to
    ast: object = None  # the kernel as scheduled (a tinygrad UOp), for `wgsl_kernel`
    slots: tuple[int, ...] = ()  # the graph's buffer slot of each argument


class WGSLKernel(NamedTuple):
    """A captured kernel compiled for WebGPU by tinygrad's WGSL renderer: what a page needs to run it."""

    name: str  # the entry point
    source: str  # binding 0 is a uniform f32 holding infinity, binding i + 1 the i-th of `bindings`
    workgroups: tuple[int, int, int]  # dispatchWorkgroups(x, y, z)
    bindings: tuple[int, ...]  # positions in the KernelCall's arguments


def wgsl_kernel(call: KernelCall) -> WGSLKernel:
    """The WGSL that tinygrad's WEBGPU backend would run for a captured kernel, with its own optimisations
    (no search: that needs the device)."""
    require("the WebGPU export")
    if call.ast is None:
        raise EdgeViTError(f"kernel {call.name} was not captured with its AST (capture under portable_c_kernels)")
    ast = call.ast.replace(arg=dataclasses.replace(call.ast.arg, beam=0, opts_to_apply=None))
    program = to_program(ast, WGSLRenderer(Target("WEBGPU", "WGSL")))
    info = program.arg
    if info.vars:
        raise EdgeViTError(f"kernel {info.function_name} needs launch variables; the WebGPU export runs each kernel as is")
    source = next(s.arg for s in program.src if s.op is Ops.SOURCE)
    bindings = tuple(call.slots.index(slot) for slot in info.globals)
    return WGSLKernel(info.function_name, source, tuple(int(n) for n in info.global_size), bindings)


def take_apart(
    jit, outputs: tuple[Tensor, ...], parameters: dict[str, Tensor], asts: dict | None = None
) -> tuple[list[KernelCall], list[Argument]]:
    """A graph captured under `portable_c_kernels()` as plain data: its kernel calls in order, and
    the `outputs` tensors' arguments. `parameters` names the model's tensors (state-dict names);
    `asts` is what `portable_c_kernels()` yielded."""
    require("the C export")
    names = {t.uop.base: name for name, t in parameters.items()}
    output_uops = [t.uop.base for t in outputs]
    linear = jit.captured.linear
    written = set()
    for call in linear.src:
        args = get_call_arg_uops(call)
        written |= {args[i] for i in get_call_outs_ins(call)[0]}
    known: dict = {}

    def argument(u) -> Argument:
        if u not in known:
            count, dtype = int(np.prod(u.shape)), np.dtype(_to_np_dtype(u.dtype))
            c_type(dtype)  # refuses a dtype the C file could not declare
            if u.op is Ops.PARAM:  # the graph's inputs, named by their position: input0, input1...
                known[u] = Argument(dtype, count, "input", name=f"input{u.arg.slot}")
            elif u in output_uops:
                known[u] = Argument(dtype, count, "output")
            elif u in written:
                known[u] = Argument(dtype, count, "scratch")
            elif u.op is Ops.BUFFER and u in buffers:
                known[u] = Argument(dtype, count, "constant", buffers[u].numpy()[:count].copy(), names.get(u))
            else:
                raise EdgeViTError(f"cannot export a read-only {u.op.name} argument: only whole weight buffers are supported")
        return known[u]

    calls = []
    for call in linear.src:
        program = call.src[0]
        if program.op is not Ops.PROGRAM:
            raise EdgeViTError(f"cannot export a graph step of type {program.op.name}")
        if program.arg.vars or program.arg.global_size != (1, 1, 1):
            raise EdgeViTError(
                f"kernel {program.arg.function_name} needs launch variables; the C export runs each kernel once per image"
            )
        source = next(s.arg for s in program.src if s.op is Ops.SOURCE).replace(KERNEL_PRELUDE, "")
        args, slots = get_call_arg_uops(call), program.arg.globals
        writes = tuple(slots.index(slot) for slot in program.arg.outs)
        ast = (asts or {}).get(program.src[0])
        arguments = [argument(args[i]) for i in slots]
        calls.append(KernelCall(program.arg.function_name, source, arguments, writes, ast, tuple(slots)))
    missing = [i for i, u in enumerate(output_uops) if u not in known]
    if missing:
        raise EdgeViTError("the captured graph does not write every output")
    return calls, [known[u] for u in output_uops]


# --- training -------------------------------------------------------------------------------------
def rng_state() -> dict[str, list[int]]:
    """The random-number counters of every device: where dropout's random stream has got to."""
    require("exact training resume")
    return {dev: c.tolist() for dev, c in Tensor._device_rng_counters.items()}


def random_state() -> list[Tensor]:
    """The tensors holding every device's random-number counter (a training step advances them)."""
    return list(Tensor._device_rng_counters.values()) if AVAILABLE else []


def restore_rng_state(state: dict[str, list[int]]) -> None:
    """Continue each device's random stream where `rng_state()` left it."""
    require("exact training resume")
    for dev, counter in state.items():
        if dev in Tensor._device_rng_counters:
            Tensor._device_rng_counters[dev].assign(Tensor(counter, device=dev, dtype="uint32")).realize()
