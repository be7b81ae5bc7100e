"""The Python side of every analysis: `analyse(run, options) -> Result`, the command a thin layer over it.

    >>> from analyses import fourier
    >>> res = fourier.analyse("checkpoints/nanda")   # a path, or interp.load_run(path)
    >>> res.key_frequencies
    >>> res.to_dict()                                # exactly what RUN_DIR/analyses/fourier.json holds
    >>> fourier.load("checkpoints/nanda")            # the typed result an earlier command wrote

Options are a frozen dataclass per analysis (defaults = the command's); a Result is a dataclass whose fields are
the top-level keys of the analysis' JSON, in the order the file has them. Importing this module is cheap (no
torch).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from training.errors import GrokscopeError, RunDirError
from training.safeio import read_json

R = TypeVar("R", bound="Result")
O = TypeVar("O")

OMIT_IF_NONE = {"omit_if_none": True}  # a key the JSON only has when there is something to say


class BadInput(GrokscopeError):
    """Input an analysis cannot work with (a run of the wrong task, a flag the run cannot satisfy, a checkpoint
    that does not fit); printed as one line, exit 2."""


def optional(default: Any = None) -> Any:
    """A Result field written to the JSON only when it is not None."""
    return dataclasses.field(default=default, metadata=OMIT_IF_NONE)


@dataclasses.dataclass
class Result:
    """Base of the typed results. `FILE` is the JSON file the command writes (under RUN_DIR/analyses/)."""

    FILE: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, key for key and in order as the command writes it."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not (f.metadata.get("omit_if_none") and getattr(self, f.name) is None)}

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        """The typed result of a JSON object this analysis wrote; BadInput naming the keys that do not fit."""
        if not isinstance(d, dict):
            raise BadInput(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing, unknown = [k for k in required if k not in d], [k for k in d if k not in names]
        if missing or unknown:
            raise BadInput(f"{cls.__name__}: " + "; ".join(
                part for part in (missing and f"missing {', '.join(missing)}",
                                  unknown and f"unknown {', '.join(map(str, unknown))}") if part))
        return cls(**d)

    @classmethod
    def load(cls: type[R], where: Any, file: str | None = None) -> R:
        """The result an earlier command wrote: `where` is a run (or sweep) directory, a `Run`, or the JSON file."""
        path = Path(where.dir if hasattr(where, "dir") else where)
        if path.is_dir():
            path = path / "analyses" / (file or cls.FILE)
        if not path.exists():
            raise RunDirError(f"{path}: no such file (run the analysis first)")
        d = read_json(path, cls.__name__)  # a regular file of bounded size, or RunDirError naming it
        try:
            return cls.from_dict(d)
        except BadInput as e:
            raise RunDirError(f"{path}: {e}") from None


def options_from(cls: type[O], args: Any, **renamed: Any) -> O:
    """The options dataclass from parsed flags: each field from the flag of its name, unless given in `renamed`."""
    return cls(**{f.name: renamed[f.name] if f.name in renamed else getattr(args, f.name)
                  for f in dataclasses.fields(cls)})


def as_run(run: Any, need_checkpoints: bool = True):
    """A `training.runs.reader.Run` from a path, every file read and checked once (a garbage file is one line naming
    it before any work); a Run (interp.load_run) is used as given, its reads raising RunDirError naming a bad
    file."""
    from analyses.common import open_run, require_run_dir

    if hasattr(run, "dir") and hasattr(run, "steps"):
        return run
    require_run_dir(Path(run))
    return open_run(Path(run), need_checkpoints=need_checkpoints)
