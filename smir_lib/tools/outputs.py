"""Output folders that never lose a user's file: what ``predict`` and ``export`` write through.

Three rules, each checked before any work is done:

* the output folder is not the input folder, nor inside it (``predict --out photos/`` would
  replace the photographs with class maps);
* a file is overwritten only when this command wrote it before: the folder's *manifest*
  (``predictions.json`` or ``model.json``, marked ``"written_by"``) lists every file the command
  wrote, and is written first, listing the files about to be written, so that a killed run can be
  rerun on the same folder;
* every file is written to a temporary name in the same folder (``tempfile.mkstemp``: a new
  file, never a planted link) and moved into place with ``os.replace``: a killed command leaves
  the previous complete file or none, never a truncated one under the final name.

Usage::

    with OutputFolder(out, "smir export", "model.json") as folder:
        folder.claim(["encoder.pth", "unet.safetensors"])   # refuses foreign files, writes the manifest
        torch.save(weights, folder.stage("encoder.pth"))    # a temporary path in out/
        folder.commit()                                     # every staged file moved into place
        folder.finish({"classes": [...]})                   # the manifest, complete
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from smir_lib.files import FileWriteError, write_error

__all__ = ["OutputFolder", "refuse_inside"]


def refuse_inside(out: Path, inputs: Path, flag: str = "--out", input_flag: str = "--images") -> None:
    """Raise ``ValueError`` when ``out`` is ``inputs`` or a folder inside it."""
    out_r, in_r = out.resolve(), inputs.resolve()
    if out_r == in_r or in_r in out_r.parents:
        raise ValueError(f"{flag} {out} is {'the same folder as' if out_r == in_r else 'inside'} {input_flag} "
                         f"{inputs}: outputs would mix with (or replace) the inputs; pass an output folder "
                         f"outside {inputs}")


def _replace(tmp: Path, final: Path) -> None:
    """Give ``tmp`` a normal file's permissions (mkstemp makes 0600) and move it to ``final``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, final)


class OutputFolder:
    """One command's output folder: claimed files, staged temporary files, a manifest (see module)."""

    def __init__(self, out: str | os.PathLike, written_by: str, manifest: str) -> None:
        self.out, self.written_by, self.manifest = Path(out), written_by, manifest
        for parent in (self.out, *self.out.parents):
            if parent.exists() and not parent.is_dir():
                raise ValueError(f"--out {self.out}: {parent} is a file, not a folder; pass a folder")
        self.previous: dict = {}
        self.owned = self._previous_files()
        self.files: list[str] = []
        self._staged: list[tuple[Path, Path]] = []

    def _previous_files(self) -> set[str]:
        """Files an earlier run of this command wrote here (empty when there is no manifest)."""
        path = self.out / self.manifest
        if not path.is_file():
            return set()
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("written_by") != self.written_by:
            raise ValueError(f"{path} exists and was not written by `{self.written_by}`: refusing to overwrite "
                             f"it; pass a new --out folder, or delete the file first")
        self.previous = data
        listed = data.get("files") if isinstance(data.get("files"), list) else []
        return {self.manifest, *(f for f in listed if isinstance(f, str) and f == Path(f).name and f[:1] != ".")}

    def claim(self, names: Iterable[str]) -> None:
        """Refuse when any of ``names`` exists and was not written by this command; then record them
        in the manifest (written now, so that a rerun after a kill may replace them; a new manifest
        says ``"complete": false``, an earlier one keeps what it said of the files still in place)."""
        names = list(dict.fromkeys(names))
        foreign = [n for n in names if (self.out / n).exists() and n not in self.owned]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ValueError(f"--out {self.out} already holds {shown}, not written by `{self.written_by}`: "
                             f"refusing to overwrite; pass a new --out folder, or move those files away")
        self.out.mkdir(parents=True, exist_ok=True)
        self.files = sorted(set(names) | (self.owned - {self.manifest}))
        for name in [*self.files, self.manifest]:  # temporary files of a killed run: never under a final name
            for stale in self.out.glob(f".{glob.escape(name)}.*.tmp"):
                stale.unlink()
        kept = {k: v for k, v in self.previous.items() if k not in ("written_by", "files")}
        self._write_manifest(kept or {"complete": False})

    def stage(self, name: str) -> Path:
        """A new temporary file in the output folder for ``name``; :meth:`commit` moves it into place."""
        if name not in self.files:
            raise ValueError(f"{name} was not claimed for {self.out}: claim every output file first")
        tmp = self._temporary(name)
        self._staged.append((tmp, self.out / name))
        return tmp

    def commit(self) -> None:
        """Move every staged file into place (``os.replace``, one atomic rename each)."""
        for tmp, final in self._staged:
            _replace(tmp, final)
        self._staged = []

    def discard(self) -> None:
        """Delete staged files that were not committed (a failed or interrupted write)."""
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged = []

    def finish(self, content: dict) -> Path:
        """Write the complete manifest: ``written_by``, ``files`` and ``content``."""
        return self._write_manifest({"complete": True, **content})

    def _temporary(self, name: str) -> Path:
        fd, tmp = tempfile.mkstemp(dir=self.out, prefix=f".{name}.", suffix=".tmp")  # O_EXCL: a new file
        os.close(fd)
        return Path(tmp)

    def _write_manifest(self, content: dict) -> Path:
        tmp = self._temporary(self.manifest)
        try:
            tmp.write_text(json.dumps({"written_by": self.written_by, "files": self.files, **content},
                                      indent=2, default=str))
            _replace(tmp, self.out / self.manifest)
        finally:
            tmp.unlink(missing_ok=True)
        return self.out / self.manifest

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, kind, err, trace) -> None:
        """Delete uncommitted temporary files; a failed write (full disk, read-only or foreign
        folder) becomes one :class:`~smir_lib.files.FileWriteError` naming the output folder."""
        self.discard()
        if isinstance(err, OSError) and not isinstance(err, (FileWriteError, FileNotFoundError)):
            raise write_error(self.out, err) from None
