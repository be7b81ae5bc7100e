"""Reading and writing the project's files without trusting what sits at a path.

Every file grokscope reads or writes goes through here:

- Reading (`read_bytes`, `read_json`, `open_regular`) takes only a regular file, up to a size bound: a FIFO would
  block forever, a device such as /dev/zero never ends. Links are followed when reading (reading through one
  changes nothing). Any failure is a RunDirError naming the file.
- Writing never goes through a symbolic link. `atomic_write_bytes` writes a fresh temporary (`.NAME.tmpPID`,
  created with O_EXCL and O_NOFOLLOW) and renames it over the name, which replaces a link there instead of
  writing into what it points to; `open_append` and `open_lock` refuse a link with one line (O_NOFOLLOW).
- `refuse_links` refuses a folder whose parts (a run's ckpt/, state/, metrics.jsonl, ...) are links: the project
  never makes one, so a link there leads into somebody else's data.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterable

from training.errors import RunDirError

MAX_READ = 2**30  # no file the project writes and reads whole (JSON, metrics.jsonl) comes near 1 GiB
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


# --- reading ---------------------------------------------------------------------------------------------------


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a plain file")


def _not_regular(path: Path, mode: int) -> RunDirError:
    return RunDirError(f"{path}: not a regular file ({_kind(mode)}); refusing to read it")


def open_regular(path: Path):
    """A regular file opened for binary reading. FileNotFoundError passes through (callers decide what a missing
    file means); anything else that is wrong is a RunDirError. O_NONBLOCK: a FIFO put there after the check
    still opens at once instead of waiting for a writer, and is then refused."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # checked before opening: opening a device may itself do something
            raise _not_regular(path, mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode)
    return os.fdopen(fd, "rb")


def read_bytes(path: Path, limit: int = MAX_READ) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (a file still growing, such as metrics.jsonl, is read
    up to the size it had when opened; a torn last line is the reader's to drop)."""
    path = Path(path)
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise RunDirError(f"{path}: {size} bytes, more than the {limit} grokscope reads from such a file")
        try:
            return f.read(size)
        except OSError as e:
            raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None


def read_json(path: Path, what: str, limit: int = MAX_READ) -> Any:
    """A JSON file's value; missing, not a regular file, too large, not UTF-8 or not JSON: RunDirError naming it."""
    try:
        raw = read_bytes(path, limit)
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RunDirError(f"{path}: unreadable {what} (not UTF-8 text: byte {e.start})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, numbers too large, nesting too deep
        raise RunDirError(f"{path}: unreadable {what} ({e})") from None


# --- writing ---------------------------------------------------------------------------------------------------


def _link_error(path: Path) -> RunDirError:
    return RunDirError(f"{path}: is a symbolic link, which grokscope never makes; refusing to write through it "
                       "(remove the link)")


def _nofollow(path, flags):  # an `opener` for open(): the last component is never followed
    return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)


def _fresh(path, flags):  # ... and the file is new: never one somebody put there
    return _nofollow(path, flags | os.O_EXCL)


def _open_nofollow(path: Path, mode: str):
    """open(path, mode) that refuses a symbolic link (ELOOP) and anything but a regular file."""
    try:
        f = open(path, mode, opener=_nofollow)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_error(path) from None
        raise
    st = os.fstat(f.fileno()).st_mode
    if not stat.S_ISREG(st):
        f.close()
        raise RunDirError(f"{path}: not a regular file ({_kind(st)}); "
                          "refusing to write to it")
    return f


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write_bytes(path: Path, data: bytes, *, before_rename: Callable[[], None] | None = None) -> None:
    """Write to `.NAME.tmpPID` (made afresh: whatever a dead writer left under that name is removed, never written
    through), flush it to disk, then rename it over `path`. A failed write (a full disk) removes the temporary and
    raises RunDirError naming `path`; the old file, if any, is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        unlink_quietly(tmp)
        with open(tmp, "wb", opener=_fresh) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except OSError as e:
        unlink_quietly(tmp)
        raise RunDirError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:  # Ctrl-C mid-write: no temporary left behind either
        unlink_quietly(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def open_append(path: Path):
    """A file opened to append to (created if missing), never through a link."""
    try:
        return _open_nofollow(path, "ab")
    except OSError as e:
        raise RunDirError(f"cannot write {path}: {e.strerror or e}") from None


def open_lock(path: Path) -> int:
    """A read-write descriptor of the lock file `path` (created if missing), never through a link."""
    try:
        fd = _nofollow(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_error(path) from None
        raise RunDirError(f"cannot lock {path}: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise RunDirError(f"{path}: not a regular file ({_kind(mode)})")
    return fd


# --- folders ---------------------------------------------------------------------------------------------------


def refuse_links(folder: Path, names: Iterable[str]) -> None:
    """RunDirError naming the first of `folder/NAME` that is a symbolic link."""
    for name in names:
        if (Path(folder) / name).is_symlink():
            raise RunDirError(f"{Path(folder) / name}: is a symbolic link, which grokscope never makes; refusing to "
                              "write through it (replace the link by the folder or file itself)")


def output_dir(path: Path) -> Path:
    """`path` as a folder to write into, made if missing: never a link, never a file."""
    path = Path(path)
    refuse_links(path.parent, [path.name])
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"{path}: exists and is not a folder") from None
    except OSError as e:
        raise RunDirError(f"cannot create {path}: {e.strerror or e}") from None
    return path
