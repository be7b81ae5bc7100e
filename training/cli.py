"""The one command-line layer shared by every `python -m training.*` and `python -m analyses.*` command.

- `Parser`: argparse without prefix matching (`--ste 50` is an error, not `--steps 50`); an error is one line on
  stderr and exit status 2.
- Argument types (`finite_float`, `positive_int`, ...) that refuse nan, inf and numbers too large for the machine.
- `run_main(prog, body, args)`: the project's errors become one line and exit 2, Ctrl-C anywhere (start-up
  included) exits 130 without a traceback, a full disk or a refused write one line naming the path.
- `json_safe`: NaN and infinities as null, so every JSON written is strict.

Imports nothing heavy: `--help` and every bad-input error answer before torch or TransformerLens is imported.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import time
from typing import Any, Callable

from training.constants import MAX_INT
from training.errors import ConfigError, GrokscopeError

# Exit statuses, the same for every command (docs/reliability.md).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# OSErrors that a different path or a freed disk fixes: exit 2 like any bad input; other OSErrors exit 1.
INPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
                errno.ENAMETOOLONG, errno.EEXIST, errno.ENOENT, errno.EINVAL, errno.ELOOP}


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        names = {a.dest: "/".join(a.option_strings) or a.metavar or a.dest for a in self._actions}
        for dest, value in vars(parsed).items():
            for v in value if isinstance(value, list) else [value]:
                if not _utf8(v):  # a path that is not UTF-8 fails late (in a figure's title, in JSON): refuse it now
                    self.error(f"argument {names.get(dest, dest)}: {str(v)!r} is not valid UTF-8 (rename it)")
        return parsed, extras

    def error(self, message: str):  # one line (argparse would print the usage block too), exit 2
        print(one_line(f"{self.prog}: error: {message}"), file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _utf8(value: Any) -> bool:
    """False for a str or path holding bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    if not isinstance(value, (str, os.PathLike)):
        return True
    try:
        os.fspath(value).encode("utf-8")
    except (UnicodeEncodeError, TypeError):
        return False
    return True


def one_line(message: str) -> str:
    """A message with its control characters escaped: a value holding a newline must not make a second line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def run_main(prog: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command's body with the project's error handling around it."""
    try:
        return body(args)
    except GrokscopeError as e:
        print(one_line(f"{prog}: error: {e}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print(f"{prog}: error: out of memory", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a full disk, a refused write, a path under a file: one line naming the path
        where = f" ({e.filename})" if e.filename else ""
        print(one_line(f"{prog}: error: {e.strerror or e}{where}"), file=sys.stderr)
        return EXIT_USAGE if e.errno in INPUT_ERRNOS else EXIT_FAILED


def main_entry(prog: str, make_parser: Callable[[], Parser], body: Callable[[argparse.Namespace], int],
               argv: list[str] | None = None) -> int:
    """Parse (Ctrl-C during parsing included), then `run_main`."""
    try:
        args = make_parser().parse_args(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return run_main(prog, body, args)


# --- argument types: argparse turns their ValueError/ArgumentTypeError into the one-line error -----------------


def finite_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return x


def parse_int(text: str) -> int:
    """An integer, also written as 1e4; refuses fractions, nan/inf and anything beyond 64 bits."""
    try:
        x = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if not math.isfinite(f) or f != int(f):
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        x = int(f)
    if abs(x) > MAX_INT:
        raise argparse.ArgumentTypeError(f"integer out of range: '{text}'")
    return x


def _bounded(parse: Callable[[str], Any], ok: Callable[[Any], bool], wanted: str, name: str) -> Callable[[str], Any]:
    """An argument type: `parse`, then refuse a value outside its range with "expected <wanted>"."""
    def check(text: str) -> Any:
        x = parse(text)
        if not ok(x):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got '{text}'")
        return x

    check.__name__ = name
    return check


positive_float = _bounded(finite_float, lambda x: x > 0, "a positive number", "positive_float")
nonneg_float = _bounded(finite_float, lambda x: x >= 0, "a number >= 0", "nonneg_float")
nonneg_int = _bounded(parse_int, lambda x: x >= 0, "an integer >= 0", "nonneg_int")
positive_int = _bounded(parse_int, lambda x: x > 0, "a positive integer", "positive_int")


def regex(text: str) -> str:
    """A regular expression that compiles (a bad one is the one-line error, not re.error)."""
    import re

    try:
        re.compile(text)
    except (re.error, RecursionError, OverflowError) as e:
        raise argparse.ArgumentTypeError(f"not a regular expression: '{text}' ({e})") from None
    return text


def positive_float_list(text: str) -> list[float]:
    """Comma-separated positive finite numbers, e.g. '0.5,1,2'."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got '{text}'")
    return [positive_float(t) for t in items]


def require(ok: bool, message: str) -> None:
    """A check on parsed arguments: raise the one-line error when it fails."""
    if not ok:
        raise ConfigError(message)


# --- output --------------------------------------------------------------------------------------------------


def json_safe(obj: Any) -> Any:
    """NaN and infinities (a diverged loss) as null, numpy scalars as Python numbers, recursively."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


T0_ENV = "GROKSCOPE_T0"  # benchmarks: a launch time.time(); the first training step reports the seconds since


def say_first_step() -> None:
    """With GROKSCOPE_T0 set to a launch `time.time()` (the start-up benchmark's), one stderr line: the seconds from
    then to this process's first training step. A diagnostic: unset or not a number, nothing."""
    try:
        seconds = time.time() - float(os.environ.get(T0_ENV, ""))
    except ValueError:
        return
    print(f"grokscope: first step {seconds:.3f} s after {T0_ENV}", file=sys.stderr, flush=True)
