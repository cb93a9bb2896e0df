"""The released zips as they are: MD5 check against the published table, then read in place.

:func:`open_release_zips` checks every zip before anything is imported: that it exists,
is a zip and (for a published name, unless turned off) has the MD5 in :data:`RELEASE_MD5`;
other names get a notice and no check. Nothing is extracted. The layouts a zip may hold
(split folder at the top, one folder down, or the zip itself; named after the folder,
else the zip's stem) are in ``docs/preparing-data.md``.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from aras400k.data.release.problems import ReleaseImportError

__all__ = ["RELEASE_MD5", "ReleaseZip", "ZipMember", "md5_of_file", "open_release_zips"]

#: MD5 digests of the published release zips, by file name (the ARAS400k download page).
RELEASE_MD5: dict[str, str] = {
    "train.zip": "95cd5caea68c813fd86888f9cd95b627",
    "val.zip": "76e61fd7557d65ba0596e44c0f92b43f",
    "test.zip": "01679231ee8e38701f5d3ab7de0b5719",
    "synth.zip": "0dc95bfdda44a816ade0d7ea747e4f9c",
}
_CHUNK = 1 << 20


@dataclass
class ReleaseZip:
    """One opened release zip (``path``) holding ``split``.

    Attributes:
        root: The folder inside the zip that holds the split folder (``zipfile.Path``).
        folder: The split folder inside the zip (holding ``images`` and ``masks``).
        archive: The open ``zipfile.ZipFile``; close it with :meth:`close`.
    """

    path: Path
    split: str
    root: Any
    folder: Any
    archive: zipfile.ZipFile

    def close(self) -> None:
        """Close the zip file."""
        self.archive.close()


@dataclass(frozen=True)
class ZipMember:
    """A file or folder inside a zip, named by the zip's path and its own: a picklable ``zipfile.Path``.

    Each process opens the zip on first use (a fork never reads through its parent's file offset).

    Attributes:
        archive: The zip file, as the ``zipfile.ZipFile`` was opened with it.
        at: The member's path inside the zip (a folder's ends with ``/``).
    """

    archive: str
    at: str

    @classmethod
    def of(cls, path: Any) -> ZipMember:
        """The member a ``zipfile.Path`` names."""
        return cls(str(path.root.filename), str(path.at))

    @property
    def name(self) -> str:
        """The member's file name."""
        return posixpath.basename(self.at.rstrip("/"))

    def open(self, mode: str = "rb") -> IO[bytes]:
        """Open the member for reading (``mode`` is ``"rb"`` or ``"r"``, both binary as in ``zipfile.Path``)."""
        if mode not in ("r", "rb"):
            raise ValueError(f"a zip member opens for reading only, got mode {mode!r}")
        return _zip_in_this_process(self.archive).open(self.at)

    def read_bytes(self) -> bytes:
        """The member's content."""
        return _zip_in_this_process(self.archive).read(self.at)

    def __str__(self) -> str:
        return posixpath.join(self.archive, self.at)


#: Zips opened by :class:`ZipMember` in this process (``_ZIPS_PID``), by path.
_ZIPS: dict[str, zipfile.ZipFile] = {}
_ZIPS_PID = [0]


def _zip_in_this_process(path: str) -> zipfile.ZipFile:
    """The zip at ``path``, opened once per process (a forked child opens its own)."""
    if _ZIPS_PID[0] != os.getpid():
        _ZIPS.clear()  # the parent's, inherited by a fork: their file offsets are shared
        _ZIPS_PID[0] = os.getpid()
    archive = _ZIPS.get(path)
    if archive is None:
        archive = _ZIPS[path] = zipfile.ZipFile(path)
    return archive


def md5_of_file(path: str | Path, progress: bool = False) -> str:
    """Lower-case MD5 hex digest of a file, read in 1 MiB chunks (with a bar in bytes if ``progress``)."""
    path = Path(path)
    digest = hashlib.md5(usedforsecurity=False)
    with (
        path.open("rb") as fh,
        tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, desc=f"md5 {path.name}", disable=not progress
        ) as bar,
    ):
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def open_release_zips(
    zips: Sequence[str | Path],
    *,
    check_md5: bool = True,
    progress: bool = True,
    notice: Callable[[str], None] = print,
) -> list[ReleaseZip]:
    """Check the release zips and open each one's split folder for reading in place, in the order given.

    Every zip is checked to exist and be readable before any is hashed, so a missing one
    is named at once. With ``check_md5`` zips with a published name are compared against
    :data:`RELEASE_MD5` (a bar while hashing if ``progress``); ``notice`` gets one line per
    zip with a name outside the table.

    Raises:
        ReleaseImportError: If a zip is missing, not a zip, has the wrong digest, holds
            no split folder, or two zips hold the same split.
    """
    paths = [Path(z) for z in zips]
    if not paths:
        raise ReleaseImportError("no zip given; name the release zips, e.g. train.zip val.zip test.zip synth.zip")
    for path in paths:
        if not path.is_file():
            raise ReleaseImportError(f"release zip {path} does not exist")
    opened: list[ReleaseZip] = []
    try:
        for path in paths:
            opened.append(_open_zip(path))
        _check_unique_splits(opened)
        for path in paths:
            _check_digest(path, check_md5, progress, notice)
    except BaseException:
        for item in opened:
            item.close()
        raise
    return opened


def _check_digest(path: Path, check_md5: bool, progress: bool, notice: Callable[[str], None]) -> None:
    """Compare a zip's MD5 with the published one (a mismatch raises), or say why it is not checked."""
    expected = RELEASE_MD5.get(path.name)
    if expected is None:
        notice(f"note: {path.name} is not a published release zip name ({', '.join(RELEASE_MD5)}); MD5 not checked")
        return
    if not check_md5:
        return
    actual = md5_of_file(path, progress=progress)
    if actual != expected:
        raise ReleaseImportError(
            f"release zip {path} is corrupt or incomplete: MD5 {actual}, expected {expected}; "
            "download it again (or pass --check_md5 false to import it anyway)"
        )


def _open_zip(path: Path) -> ReleaseZip:
    """Open a zip and find its split folder."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ReleaseImportError(f"release zip {path} is not a readable zip ({err})") from err
    try:
        root, split, folder = _find_split_folder(path, zipfile.Path(archive))
    except BaseException:
        archive.close()
        raise
    return ReleaseZip(path=path, split=split, root=root, folder=folder, archive=archive)


def _find_split_folder(path: Path, top: Any) -> tuple[Any, str, Any]:
    """Find ``(root, split name, split folder)`` inside a zip (the layouts of ``docs/preparing-data.md``)."""
    stem = path.stem
    candidates = [top] + [child for child in top.iterdir() if child.is_dir()]
    for root in candidates:
        if (root / stem / "images").is_dir():
            return root, stem, root / stem
    for root in candidates:
        splits = [c for c in root.iterdir() if c.is_dir() and (c / "images").is_dir()]
        if len(splits) == 1:
            return root, splits[0].name, splits[0]
    if (top / "images").is_dir():
        return top, stem, top
    raise ReleaseImportError(
        f"release zip {path} holds no split folder ({stem}/images/*.png or images/*.png at its top)"
    )


def _check_unique_splits(opened: list[ReleaseZip]) -> None:
    """Refuse two zips holding the same split."""
    seen: dict[str, Path] = {}
    for item in opened:
        if item.split in seen:
            raise ReleaseImportError(f"release zips {seen[item.split]} and {item.path} both hold split {item.split!r}")
        seen[item.split] = item.path
