"""Where saescope keeps its cache, atomic writes (an interrupted job never leaves half a file), JSON
helpers, and the one ``Checkpoint`` that every resumable job (training, extraction) shares."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from saescope.errors import SaescopeError


def saescope_home() -> Path:
    """The cache folder: ``$SAESCOPE_HOME``, default ``~/.cache/saescope``."""
    return Path(os.environ.get("SAESCOPE_HOME", Path.home() / ".cache" / "saescope")).expanduser()


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    Works for files and folders. Example::

        with atomic_path("out/metrics.json") as tmp:
            tmp.write_text("{}")
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:  # a file in the way, no permission, a read-only or virtual file system
        raise SaescopeError(f"cannot write {target}: {exc.strerror or exc} (choose another location)") from None
    tmp_target = tmp / target.name
    try:
        yield tmp_target
        _normal_permissions(tmp_target)
        if target.is_dir() and tmp_target.is_dir():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp_target, target)
            shutil.rmtree(old, ignore_errors=True)
        elif target.is_dir():
            raise SaescopeError(f"cannot write the file {target}: a folder of that name exists")
        else:
            os.replace(tmp_target, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _normal_permissions(path: Path) -> None:
    """Files made in a private temp dir are 0600; give them the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)


def json_ready(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays as Python values and NaN/inf as ``None`` (strict JSON)."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (NaN/inf as null), atomically. Returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_ready(obj), indent=indent) + "\n", encoding="utf-8")
    return Path(path)


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of a UTF-8 file. A missing file, a folder, or bytes that are not UTF-8 are a
    ``SaescopeError`` naming the file (and the offset of the first bad byte)."""
    path = Path(path)
    if not path.is_file():
        raise SaescopeError(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SaescopeError(f"{what} {path} is not UTF-8 text (invalid byte at offset {exc.start}): "
                            "convert it to UTF-8") from None
    except OSError as exc:
        raise SaescopeError(f"cannot read {what} {path}: {exc.strerror}") from None


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; a missing or malformed file is a ``SaescopeError`` naming it."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SaescopeError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None


def read_jsonl(path: str | Path, what: str = "file", fields: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file. A line that is not a JSON
    object holding ``fields`` is a ``SaescopeError`` naming the file and line, in one wording everywhere."""
    rows = []
    for line, text in enumerate(read_text(path, what).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SaescopeError(f"{path}, line {line}: not valid JSON ({exc.msg})") from None
        missing = [name for name in fields if name not in row] if isinstance(row, dict) else list(fields)
        if not isinstance(row, dict) or missing:
            wanted = f" with {', '.join(fields)}" if fields else ""
            raise SaescopeError(f"{path}, line {line}: expected a JSON object{wanted}")
        rows.append((line, row))
    return rows


RESUME_HINT = "--resume on the command line, resume=True in Python"


class Checkpoint:
    """The resumable state of a long job writing into ``out``: ``out/checkpoint/`` holds tensors
    (``state.safetensors``) and a JSON ``state.json``, replaced atomically on every save.

    ``finished`` names the file whose presence in ``out`` means the job completed. Example::

        ckpt = Checkpoint("runs/a", finished="manifest.json")
        ckpt.guard(resume=False)             # refuses a folder holding another run
        ckpt.save({"x": tensor}, {"step": 10}); tensors, info = ckpt.load(); ckpt.clear()
    """

    def __init__(self, out: str | Path, finished: str, name: str = "checkpoint",
                 settings: dict[str, Any] | None = None) -> None:
        self.out, self.finished = Path(out), finished
        self.folder = self.out / name  # one per rank in distributed jobs (``checkpoint-rank0-of-2``)
        self.settings = json_ready(settings or {})
        """The run's settings: saved with every checkpoint; ``load`` refuses a checkpoint written with others."""

    def exists(self) -> bool:
        return (self.folder / "state.json").is_file()

    def guard(self, resume: bool) -> None:
        """Refuse to start over a finished or unfinished run, to resume without a checkpoint, or to
        write into something that is not a folder. Raises ``SaescopeError``."""
        if self.out.exists() and not self.out.is_dir():
            raise SaescopeError(f"{self.out} is a file, not a folder: choose another output folder")
        if resume:
            if not self.exists():
                others = sorted(p.name for p in self.out.glob("checkpoint*") if (p / "state.json").is_file())
                if others:
                    raise SaescopeError(f"nothing to resume as {self.folder.name}: {self.out} holds {', '.join(others)} "
                                        "(written with another number of workers): resume with the same --workers")
                raise SaescopeError(f"nothing to resume: {self.folder} holds no checkpoint")
            return
        if (self.out / self.finished).exists():
            raise SaescopeError(f"{self.out} already holds a finished run: choose another output folder")
        if self.exists():
            raise SaescopeError(f"{self.out} holds an unfinished run: resume it ({RESUME_HINT}), or choose another output folder")
        if self.out.is_dir() and any(p for p in self.out.iterdir() if not p.name.startswith(".")):
            raise SaescopeError(f"{self.out} is not empty (files of a run that ended before its first "
                                "checkpoint?): delete it or choose another output folder")

    def save(self, tensors: dict[str, Any], info: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        with atomic_path(self.folder) as tmp:
            tmp.mkdir()
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
            (tmp / "state.json").write_text(json.dumps(json_ready({**info, "settings": self.settings}), indent=2) + "\n")

    def load(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(self.folder / "state.safetensors"))
            info = json.loads((self.folder / "state.json").read_text())
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same user problem
            raise SaescopeError(f"the checkpoint in {self.folder} is unreadable ({type(exc).__name__}): "
                                "delete it to start over") from None
        saved = info.pop("settings", None)
        if saved is not None:  # checkpoints from before settings were saved are taken as they are
            for key in sorted(set(saved) | set(self.settings)):
                if saved.get(key) != self.settings.get(key):
                    raise SaescopeError(f"cannot resume: the checkpoint in {self.folder} was written with {key} "
                                        f"{saved.get(key)!r}, not {self.settings.get(key)!r}: resume with the same "
                                        "settings, or choose another output folder")
        return tensors, info

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
