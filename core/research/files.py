"""Bar files a research run may read: only files inside the project's data folder, by a name the server chose.

A browser sends an upload's name, and that name is the client's: ``/home/me/.ssh/id_rsa.csv`` or
``../../x.csv`` are valid ``File`` names. So an upload is never read or recorded by its name: its bytes are
kept as ``uploads/<sha256 prefix>.csv|parquet`` inside the data folder (the same bytes, the same file), its name
only shown (``display_name``: the base name, no control characters, cut short). A saved run records that stored
name, relative to the data folder.

A name picked from the data folder, or read back from a saved run, is resolved inside it (``resolve_data_file``):
no ``..``, no absolute path, no symlink leading out; anything else is refused without being opened, so a refusal
never shows a byte of the file. A run saved before this rule with ``data/x.csv`` still opens (the leading
``data/`` is the folder itself).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path, PurePosixPath

from core.venues.marketdata import BarDataError

DATA_DIR = Path("data")  # relative to the app's working directory, as DB_PATH's default data/trading.db
UPLOADS = "uploads"  # inside the data folder; git-ignored
HASH_CHARS = 24  # 96 bits of the upload's sha256: two different uploads never share a name
NAME_MAX = 80  # an upload's shown name, in characters
SUFFIXES = {".csv": ".csv", ".parquet": ".parquet", ".pq": ".parquet"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class FileRefused(BarDataError):
    """A name that does not stay inside the data folder; the message names it, never the file's content."""


class DataFileMissing(BarDataError):
    """A safe name with no file behind it (deleted, or saved on another machine)."""


def display_name(client_name: str) -> str:
    """An upload's name as shown: its base name (either slash a separator), no control or direction characters,
    at most ``NAME_MAX`` characters (the suffix kept), never empty."""
    text = _CONTROL.sub("", str(client_name or "")).replace("\\", "/")
    base = " ".join(PurePosixPath(text).name.split())
    if base.strip(".") == "":
        return "upload"
    if len(base) > NAME_MAX:
        suffix = PurePosixPath(base).suffix[:12]
        base = base[:NAME_MAX - len(suffix) - 1] + "…" + suffix
    return base


def _shown(name: str) -> str:
    """A refused name for a message: no control characters, cut at 120 characters."""
    text = _CONTROL.sub("", str(name))
    return repr(text if len(text) <= 120 else text[:119] + "…")


def store_upload(data: bytes, client_name: str, data_dir: Path = DATA_DIR) -> str:
    """Keep an upload's bytes as ``uploads/<sha256 prefix><suffix>`` under ``data_dir``; the stored name (relative
    to ``data_dir``). The client's name only picks CSV or Parquet. The same bytes again: the same file, not
    written twice."""
    suffix = SUFFIXES.get(PurePosixPath(display_name(client_name)).suffix.lower())
    if suffix is None:
        raise BarDataError(f"{display_name(client_name)}: unsupported file type (use .csv or .parquet)")
    rel = f"{UPLOADS}/{hashlib.sha256(data).hexdigest()[:HASH_CHARS]}{suffix}"
    folder = Path(data_dir) / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    target = Path(data_dir) / rel
    if target.is_file() and not target.is_symlink() and target.stat().st_size == len(data):
        return rel
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)  # atomic: a reader never sees half a file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rel


def resolve_data_file(name: str, data_dir: Path = DATA_DIR) -> Path:
    """The file ``name`` (relative to ``data_dir``) stands for, resolved; FileRefused when the name is absolute,
    holds ``..`` or leads out of ``data_dir`` (a symlink), DataFileMissing when nothing is there. Nothing is
    opened before the name is accepted."""
    text = str(name or "")
    if not text.strip():
        raise FileRefused("no file name given")
    if _CONTROL.search(text):
        raise FileRefused(f"{_shown(text)}: refused, a file name has no control characters")
    posix = text.replace("\\", "/")
    rel = PurePosixPath(posix)
    if rel.is_absolute() or _DRIVE.match(posix):
        raise FileRefused(f"{_shown(text)}: refused, an absolute path; choose a file inside the data folder")
    if ".." in rel.parts:
        raise FileRefused(f"{_shown(text)}: refused, '..' leads out of the data folder")
    root = Path(data_dir).resolve()
    if len(rel.parts) > 1 and rel.parts[0] == Path(data_dir).name and not (root / rel).exists():
        rel = PurePosixPath(*rel.parts[1:])  # a run saved as data/x.csv: the folder itself named
    full = (root / rel).resolve()
    if not full.is_relative_to(root):
        raise FileRefused(f"{_shown(text)}: refused, it leads out of the data folder (a symlink)")
    if not full.is_file():
        raise DataFileMissing(f"{_shown(text)}: no such file in the data folder")
    return full


def list_data_files(data_dir: Path = DATA_DIR) -> list[str]:
    """Bar files kept in ``data_dir`` (relative names, sorted), without Alpaca's cache, stored uploads or anything
    a symlink takes out of the folder."""
    root = Path(data_dir)
    if not root.is_dir():
        return []
    real = root.resolve()
    out = []
    for p in root.rglob("*"):
        parts = p.relative_to(root).parts
        if p.suffix.lower() not in SUFFIXES or "cache" in parts or parts[0] == UPLOADS or not p.is_file():
            continue
        if not p.resolve().is_relative_to(real):
            continue
        out.append(PurePosixPath(*parts).as_posix())
    return sorted(out)
