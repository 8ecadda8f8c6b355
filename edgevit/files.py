"""Writing files so that nothing is lost, and directories only this user can write.

- `atomic_write`: a temp file beside the target, written with plain writes (no mmap: a full disk is
  an error, not SIGBUS), flushed and fsynced, then renamed over the target. Only a regular file, a
  symbolic link (the link itself: it is not followed) or nothing is ever replaced; a directory or
  device node is refused by name. Any failure removes the temp file, and ENOSPC, EROFS, EACCES and
  the like become one `EdgeViTError` line.
- `signals_deferred`: Ctrl-C and SIGTERM wait until a short critical write is done.
- `PrivateDir`: a directory opened once, checked on its open descriptor (ours, mode 0700), whose
  entries are opened relative to that descriptor without following links and checked again (ours,
  not writable by others) before a byte is read. Renaming or swapping the directory, or any entry,
  after the check changes nothing: the descriptor still names what was checked.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from edgevit.errors import EdgeViTError

CACHE_ENV = "EDGEVIT_CACHE"  # a directory, or "0" to disable the cache
PRIVATE_MODE = 0o700  # a private directory: this user only
ENTRY_MODE = 0o600  # its entries, whatever the umask
OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
TEMP_SUFFIX = ".tmp"
CHUNK = 1 << 20  # bytes per write call
PROC_FD = Path("/proc/self/fd")  # Linux: a path through an open descriptor, for libraries that only take paths
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def default_cache_dir() -> Path | None:
    """$EDGEVIT_CACHE, else $XDG_CACHE_HOME/edgevit, else ~/.cache/edgevit; None when $EDGEVIT_CACHE is
    0 or there is no home directory to put it in."""
    env = os.environ.get(CACHE_ENV)
    if env == "0":
        return None
    if env:
        return Path(env)
    if base := os.environ.get("XDG_CACHE_HOME"):
        return Path(base) / "edgevit"
    # an empty or missing $HOME is not the root directory: the account's own home is asked instead
    home = os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return Path(home) / ".cache" / "edgevit" if os.path.isabs(home) and home != "/" else None


# --- atomic writes --------------------------------------------------------------------------------
def temp_path(target: Path, pid: int | None = None) -> Path:
    """Where `target` is written before it is renamed into place: hidden, beside it, named by process."""
    return target.with_name(f".{target.name}.{os.getpid() if pid is None else pid}{TEMP_SUFFIX}")


def replaceable(path: str | os.PathLike) -> Path:
    """`path`, checked before a write replaces it: a regular file, a symbolic link or nothing yet, in a
    directory that exists. A link is replaced itself, never followed: whoever can plant a link (in
    /tmp, say) must not choose which file gets overwritten."""
    path = Path(path)
    try:
        st = path.lstat()
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise EdgeViTError(f"{path}: directory {path.parent} does not exist") from None
        return path
    except OSError as e:
        raise EdgeViTError(f"{path}: cannot write ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise EdgeViTError(f"{path}: is a directory; give a file name")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise EdgeViTError(f"{path}: is a device, pipe or socket, not a regular file; not replacing it")
    return path


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def remove_stale_temps(target: Path) -> None:
    """Delete temp files of `target` left by processes of this user that died mid-write (killed, power
    cut): their names carry the pid, and a pid that no longer runs will never finish its write.

    A directory is listed once per process: `classify --attention DIR` writes a file per image into
    one directory, and listing it for every write made N writes cost N listings of up to N entries.
    A writer that dies after that listing leaves its temp file to the next process."""
    directory = os.path.abspath(target.parent)
    if directory not in _dead_temps:
        _dead_temps[directory] = _list_dead_temps(directory)
    for path, pid in _dead_temps[directory].pop(target.name, []):
        if not process_alive(pid):  # again: the pid may have been reused since the listing
            with contextlib.suppress(OSError):
                os.unlink(path)


_dead_temps: dict[str, dict[str, list[tuple[str, int]]]] = {}  # directory -> target name -> dead writers' (temp, pid)


def _list_dead_temps(directory: str) -> dict[str, list[tuple[str, int]]]:
    found: dict[str, list[tuple[str, int]]] = {}
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            name, _, pid = entry.name.removesuffix(TEMP_SUFFIX).rpartition(".")
            if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and pid.isdigit() and name[1:]):
                continue
            st = entry.stat(follow_symlinks=False)
            mine = stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()
            if mine and int(pid) != os.getpid() and not process_alive(int(pid)):
                found.setdefault(name[1:], []).append((entry.path, int(pid)))
    return found


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block are handed to their handlers when it ends: for
    writes short enough that finishing them beats losing them.

    Done with Python's handlers, not the signal mask: a blocked signal is still delivered to any other
    thread (numpy's BLAS and tinygrad start some), and Python acts on it at once. Python runs handlers
    in the main thread only, so elsewhere the block is not shielded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, object]] = []

    def hold(signum, frame) -> None:
        pending.append((signum, frame))

    previous = {signum: signal.signal(signum, hold) for signum in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum, frame in pending:
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)  # the default action (SIGTERM: exit), now that the write is done


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, deferred: bool = False) -> None:
    """Call write(tmp) on a fresh temp file beside `path`, fsync it, then rename it over `path`.

    A crash or Ctrl-C at any point leaves either the old file or the new one, never a torn one, and no
    temp file. `deferred` holds Ctrl-C and SIGTERM until the file is in place (for quick writes that
    must not be lost, like a checkpoint). Errors writing are one line naming `path`.
    """
    target = replaceable(path)
    remove_stale_temps(target)
    tmp = temp_path(target)
    try:
        with signals_deferred() if deferred else contextlib.nullcontext():
            # exclusive and not through a link: a file planted under the temp name is never written into
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666))
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            replaceable(target)  # still a regular file or nothing, just before it is replaced
            os.replace(tmp, target)
            fsync_directory(target.parent)
    except OSError as e:
        raise EdgeViTError(f"{target}: cannot write ({e.strerror or e})") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view[:CHUNK]) :]


def read_regular(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file at `path`, read through one descriptor opened read-only: what a
    caller checks, hashes and uses is then one and the same, whatever replaces the file meanwhile. A
    FIFO, device or directory is refused by name (without blocking on it); so is a file over `limit`
    bytes. Read-only files and filesystems are fine."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EdgeViTError(f"{path}: no such file") from None
    except OSError as e:
        raise EdgeViTError(f"{path}: cannot read ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise EdgeViTError(f"{path}: is a directory, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise EdgeViTError(f"{path}: not a regular file (a pipe, socket or device), not a {what}")
        data = _read_up_to(fd, limit + 1, st.st_size)
    except OSError as e:
        raise EdgeViTError(f"{path}: cannot read ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise EdgeViTError(f"{path}: over {limit:,} bytes, more than a {what} may be")
    return data


def _read_up_to(fd: int, most: int, expected: int) -> bytes:
    # read(most) would allocate `most` bytes up front, a GiB for an empty file: read what the file
    # says it holds, then on in small steps (it may grow meanwhile), never past `most`
    parts, got, step = [], 0, min(most, expected + 1)
    while got < most:
        part = os.read(fd, min(step, most - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
        step = 1 << 16
    return b"".join(parts)


class OutputLock:
    """One writer at a time for an output file: `.NAME.lock` beside it, made exclusively and holding the
    writer's pid. A lock whose process is gone (killed, a power cut) is taken over; one held by a live
    process is refused by name, so two runs never write the same file and lose one's work silently."""

    def __init__(self, target: str | os.PathLike):
        target = Path(target)
        self.path = target.with_name(f".{target.name}.lock")
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                pid = self._holder()
                if pid is not None and pid != os.getpid() and process_alive(pid):
                    raise EdgeViTError(
                        f"{target}: another run (pid {pid}) is writing it; wait for it, or choose another"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                continue
            except OSError as e:
                raise EdgeViTError(f"{target}: cannot write beside it ({e.strerror})") from None
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return
        raise EdgeViTError(f"{target}: its lock {self.path} keeps coming back; is another run starting?")

    def _holder(self) -> int | None:
        try:
            text = self.path.read_text()[:32]
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        if self._holder() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def check_writable(path: str | os.PathLike) -> Path:
    """Fail now, in one line, if `path` could not be written later: its directory is created if
    missing, and a temp file is made there and removed. Returns the file a write would replace."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeViTError(f"{path}: cannot create its directory {path.parent} ({e.strerror})") from None
    target = replaceable(path)
    tmp = temp_path(target)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise EdgeViTError(f"{target}: cannot write ({e.strerror})") from None
    os.unlink(tmp)
    return target


# --- private directories --------------------------------------------------------------------------
def _private_mkdirs(path: Path) -> None:
    """Create `path` and any missing parents with mode 0700 (intermediate directories would otherwise
    get 0777 minus the umask: world-writable under umask 000)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=PRIVATE_MODE)


class PrivateDir:
    """A directory that only this user can write, held open by descriptor (see the module docstring)."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd
        self.writable = bool(os.fstat(fd).st_mode & stat.S_IWUSR)
        weakref.finalize(self, os.close, fd)

    @classmethod
    def open(cls, path: str | os.PathLike) -> PrivateDir | None:
        """`path` (created, mode 0700, if missing) opened and checked; None unless it is a real
        directory (not a link), owned by this user, with mode exactly 0700 (no access for others)."""
        path = Path(path)
        try:
            _private_mkdirs(path)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & ~stat.S_IRWXU:
            os.close(fd)
            return None
        return cls(path, fd)

    @staticmethod
    def refusal(path: str | os.PathLike) -> str:
        """Why `open` refused `path`, in words."""
        path = Path(path)
        try:
            _private_mkdirs(path)
            st = os.lstat(path)
        except OSError as e:
            return f"cannot create or read it ({e.strerror})"
        if stat.S_ISLNK(st.st_mode):
            return "it is a symbolic link"
        if not stat.S_ISDIR(st.st_mode):
            return "it is not a directory"
        if st.st_uid != os.getuid():
            return "another user owns it"
        return f"others may use it (mode {stat.S_IMODE(st.st_mode):o}, not 700)"

    def _entry_ok(self, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & OTHERS_WRITE

    def read(self, name: str, limit: int) -> bytes | None:
        """The entry's bytes, or None when it is missing, over `limit` bytes, or not a regular file of
        this user's that nobody else can write. Checked on the descriptor it is read through."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not self._entry_ok(st) or st.st_size > limit:
                return None
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(limit + 1)
            return data if len(data) <= limit else None
        except OSError:
            return None
        finally:
            os.close(fd)

    def write(self, name: str, data: bytes) -> None:
        """Atomically replace entry `name` with `data`, mode 0600 whatever the umask. Raises OSError."""
        tmp = f".{name}.{os.getpid()}{TEMP_SUFFIX}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self.fd)  # this process's own leftover: the name is ours alone
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, ENTRY_MODE, dir_fd=self.fd)
            try:
                os.fchmod(fd, ENTRY_MODE)
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            os.fsync(self.fd)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)

    def claim(self, name: str) -> bool:
        """Whether entry `name` is a regular file of this user's that nobody else can write, created
        empty (mode 0600) if missing: for code that opens it by path afterwards (sqlite)."""
        flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, ENTRY_MODE, dir_fd=self.fd)
        except OSError:
            return False
        try:
            return self._entry_ok(os.fstat(fd))
        finally:
            os.close(fd)

    def touch(self, name: str) -> None:
        """Mark `name` as just used: its access time, which least-recently-used eviction reads (set
        here, as relatime and noatime mounts do not on a read). The modification time stays when the
        entry was written."""
        with contextlib.suppress(OSError):
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            os.utime(name, ns=(time.time_ns(), st.st_mtime_ns), dir_fd=self.fd, follow_symlinks=False)

    def remove(self, name: str) -> None:
        with contextlib.suppress(OSError):
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=self.fd)
            else:
                os.unlink(name, dir_fd=self.fd)

    def usage(self) -> list[tuple[str, int, float]]:
        """(name, bytes, last used: access time) of every entry; a directory's bytes are those of the
        files in it."""
        out = []
        with contextlib.suppress(OSError), os.scandir(self.fd) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                size = st.st_size
                if stat.S_ISDIR(st.st_mode):
                    size = self._tree_bytes(entry.name)
                out.append((entry.name, size, st.st_atime))
        return out

    def _tree_bytes(self, name: str) -> int:
        total = 0
        with contextlib.suppress(OSError):
            for _, _, files, root_fd in os.fwalk(name, dir_fd=self.fd):
                total += sum(os.stat(f, dir_fd=root_fd, follow_symlinks=False).st_size for f in files)
        return total

    def descriptor_path(self, name: str) -> str:
        """A path to entry `name` that resolves through the held descriptor (Linux), for code that only
        takes paths (sqlite): swapping the directory afterwards cannot redirect it."""
        return str(PROC_FD / str(self.fd) / name) if PROC_FD.is_dir() else str(self.path / name)
