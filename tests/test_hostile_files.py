"""Writes that lose nothing and directories nobody else can write (edgevit.files)."""

import errno
import os
import signal
import stat
import subprocess
import sys

import pytest
from conftest import ROOT

from edgevit import files
from edgevit.errors import EdgeViTError
from edgevit.files import PrivateDir, atomic_write, check_writable, remove_stale_temps, signals_deferred, temp_path


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped): no live process has it now."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_only_a_regular_file_is_ever_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(EdgeViTError, match="is a device, pipe or socket, not a regular file; not replacing it"):
        atomic_write(fifo, lambda tmp: tmp.write_bytes(b"x"))
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    with pytest.raises(EdgeViTError, match="is a directory; give a file name"):
        atomic_write(tmp_path, lambda tmp: tmp.write_bytes(b"x"))
    with pytest.raises(EdgeViTError, match=r"directory .*no/such does not exist"):
        atomic_write(tmp_path / "no" / "such" / "f", lambda tmp: tmp.write_bytes(b"x"))
    # a link is replaced, never followed: a link planted in /tmp cannot choose the file overwritten
    (tmp_path / "real").write_bytes(b"old")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    atomic_write(tmp_path / "link", lambda tmp: tmp.write_bytes(b"new"))
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "link").read_bytes() == b"new"
    assert (tmp_path / "real").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "pipe", "real"]


def test_a_full_disk_is_one_line_and_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "w.bin"
    target.write_bytes(b"good")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(EdgeViTError) as e:
        atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert str(e.value) == f"{target}: cannot write (No space left on device)"
    assert target.read_bytes() == b"good" and [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_a_planted_temp_name_is_never_written_through(tmp_path):
    target, victim = tmp_path / "w.bin", tmp_path / "victim"
    victim.write_bytes(b"keep")
    temp_path(target).symlink_to(victim)  # the name this process would write to first
    with pytest.raises(EdgeViTError, match="cannot write"):
        atomic_write(target, lambda tmp: tmp.write_bytes(b"evil"))
    assert victim.read_bytes() == b"keep" and not target.exists()


def test_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "w.safetensors"
    dead, live = temp_path(target, dead_pid()), temp_path(target, os.getppid())
    other = tmp_path / ".other.safetensors.1.tmp"
    for p in (dead, live, other):
        p.write_bytes(b"half")
    remove_stale_temps(target)
    assert not dead.exists() and live.exists() and other.exists()
    live.unlink()
    atomic_write(target, lambda tmp: tmp.write_bytes(b"x"))  # every write cleans up after killed ones
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "w.safetensors"]


def test_many_writes_into_one_directory_list_it_once(tmp_path, monkeypatch):
    dead = temp_path(tmp_path / "map-49.png", dead_pid())
    dead.write_bytes(b"half")
    listings = []
    scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: listings.append(path) or scandir(path))
    for i in range(50):  # `classify --attention DIR`: a file per image
        atomic_write(tmp_path / f"map-{i}.png", lambda tmp: tmp.write_bytes(b"x"))
    assert len(listings) == 1 and not dead.exists()
    assert len(list(tmp_path.iterdir())) == 50


def test_check_writable_finds_a_bad_output_before_any_work(tmp_path):
    assert check_writable(tmp_path / "new" / "dir" / "w.safetensors") == tmp_path / "new" / "dir" / "w.safetensors"
    assert list((tmp_path / "new" / "dir").iterdir()) == []  # the probe file is gone
    with pytest.raises(EdgeViTError, match="is a directory"):
        check_writable(tmp_path / "new")
    (tmp_path / "file").write_text("")
    with pytest.raises(EdgeViTError, match="cannot create its directory"):
        check_writable(tmp_path / "file" / "w.safetensors")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(EdgeViTError, match="not a regular file"):
        check_writable(tmp_path / "pipe")


def test_signals_wait_until_the_deferred_block_is_done():
    done = []
    with pytest.raises(KeyboardInterrupt), signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("write finished")  # still runs: the signal is pending, not yet acted on
    assert done == ["write finished"]


def test_sigterm_in_a_command_cleans_up_and_exits_143(tmp_path):
    """cli.run turns SIGTERM into an exception: `finally` blocks run, so no temp file is left."""
    code = f"""
import sys, time
from pathlib import Path
from edgevit.cli import run
from edgevit.files import atomic_write

def slow(tmp):
    tmp.write_bytes(b"half")
    print("writing", flush=True)
    time.sleep(60)

run("writer", lambda argv: atomic_write({str(tmp_path / "out.bin")!r}, slow))
"""
    env = {**os.environ, "EDGEVIT_CACHE": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err == "writer: terminated\n"
    assert list(tmp_path.iterdir()) == []


def test_a_private_dir_is_exactly_ours_and_held_by_its_descriptor(tmp_path):
    for mode in (0o755, 0o770, 0o777):
        shared = tmp_path / f"m{mode:o}"
        shared.mkdir()
        shared.chmod(mode)
        assert PrivateDir.open(shared) is None
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real").mkdir(mode=0o700)
    assert PrivateDir.open(tmp_path / "link") is None  # a link could be swapped after the check

    old = os.umask(0)
    try:
        private = PrivateDir.open(tmp_path / "a" / "b" / "cache")
        private.write("entry", b"payload")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700  # parents too, whatever the umask
    assert stat.S_IMODE((tmp_path / "a" / "b" / "cache" / "entry").stat().st_mode) == 0o600
    assert private.read("entry", 100) == b"payload" and private.read("entry", 3) is None

    # swapping the directory after it was checked redirects nothing: reads go through the descriptor
    cache = tmp_path / "a" / "b" / "cache"
    cache.rename(tmp_path / "moved")
    cache.mkdir()
    (cache / "entry").write_bytes(b"planted")
    assert private.read("entry", 100) == b"payload"


def test_entries_others_could_have_written_or_that_are_not_files_are_not_read(tmp_path):
    private = PrivateDir.open(tmp_path / "c")
    (tmp_path / "c" / "open").write_bytes(b"x")
    (tmp_path / "c" / "open").chmod(0o666)
    (tmp_path / "c" / "link").symlink_to(tmp_path / "c" / "open")
    os.mkfifo(tmp_path / "c" / "fifo")
    assert [private.read(name, 10) for name in ("open", "link", "fifo", "missing")] == [None] * 4
    assert not private.claim("open") and private.claim("fresh") and (tmp_path / "c" / "fresh").stat().st_size == 0


def test_a_ctrl_c_during_a_weights_save_waits_until_the_file_is_in_place(tmp_path, monkeypatch):
    """A second Ctrl-C (or SIGTERM) while a checkpoint is saved must not lose that checkpoint."""
    from tinygrad import Tensor

    from edgevit import weights

    target = tmp_path / "run.ckpt.safetensors"
    real = files.fsync_directory

    def interrupted(directory):  # the signal arrives after the rename, while the save is finishing
        os.kill(os.getpid(), signal.SIGINT)
        real(directory)

    monkeypatch.setattr(files, "fsync_directory", interrupted)
    with pytest.raises(KeyboardInterrupt):
        weights.save(target, {"w": Tensor([1.0, 2.0])}, {"step": 7})
    assert weights.read_header(target).metadata == {"step": 7}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
