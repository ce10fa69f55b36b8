"""Download, verify and extract the real datasets and the ImageNet weights.

``smir download NAME [--root DIR]`` runs :func:`run` (its options: :func:`add_arguments`). What it does
for each file of the manifest (:data:`SOURCES`):

1. **Skip when done**: a file that is already in place and passes verification is not
   downloaded again; an archive already extracted (a marker file records it) is not re-extracted.
   A second run therefore verifies and downloads nothing.
2. **Stream** to ``<file>.part`` with a progress bar (``tqdm.auto``; ``--quiet`` turns it off).
   A ``.part`` left by a cut connection is **resumed** with an HTTP ``Range`` request; a server
   that ignores ``Range`` (answers 200 instead of 206) makes the download start over.
3. **Refuse HTML**: a ``text/html`` answer, or a body starting with ``<!DOCTYPE``/``<html``, is a
   login or error page served instead of the file; it is reported, never saved as the archive.
4. **Retry** network failures and 5xx answers with exponential backoff; 4xx answers fail at once
   with the URL and status.
5. **Verify** size and checksum (md5, sha256, or the sha256 prefix in torchvision weight file
   names). A mismatch deletes the ``.part`` file and raises: nothing half-written stays in place.
   A short read (fewer bytes than ``Content-Length``, ``Content-Range`` or the manifest's size
   announce) is a failed attempt: retried, resuming the ``.part``.
6. **Rename** ``.part`` to the final name atomically (``os.replace``).
7. **Extract** safely: every member of a zip or tar is checked first (absolute paths, ``..``,
   links pointing outside the target, device files are rejected, naming the member) and only
   then extracted (tar with ``filter="data"``). RAR multi-part archives go through an external
   tool (``unrar``, ``7z``, ``bsdtar`` or ``unar``), and the result is checked the same way.
   Links are checked where they finally land (after a top folder is stripped) and never followed
   when the files are moved into place. An archive that fails to extract is reported; one the
   manifest has no size or checksum for is deleted, so the next run downloads it again.
8. **Check the layout** and print one summary line with the number of images per split.

Credentials: Cityscapes reads ``CITYSCAPES_USERNAME`` / ``CITYSCAPES_PASSWORD`` or prompts (the
password with ``getpass``, never echoed, logged or stored). Nassar uses the Kaggle API token from
``~/.kaggle/kaggle.json`` (or ``$KAGGLE_CONFIG_DIR``) or ``KAGGLE_USERNAME`` / ``KAGGLE_KEY``.
"""

from __future__ import annotations

import argparse
import base64
import errno
import gzip
import hashlib
import http.client
import http.cookiejar
import json
import lzma
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from smir_lib.data import get_dataset
from smir_lib.files import atomic_write_text, read_json
from smir_lib.runtime import whole_number

CHUNK = 1 << 20
USER_AGENT = "smir-notebooks-data-download/0.1 (+python-urllib)"


class DownloadError(RuntimeError):
    """A download failed for good (after retries, or at once for a 4xx answer)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the manifest's size or checksum."""


class HtmlInsteadOfFileError(DownloadError):
    """The server answered with an HTML page (login, quota or error page) instead of the file."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would land outside the extraction folder."""


class CorruptArchiveError(RuntimeError):
    """A downloaded archive cannot be extracted: truncated, corrupt, or not an archive."""


class MissingToolError(RuntimeError):
    """An external program (a RAR extractor) or credentials are needed and missing."""


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RemoteFile:
    """One file of the manifest. Unknown sizes or checksums are ``None`` (said so, not guessed)."""

    url: str
    filename: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None  # torchvision weights: the file name carries a sha256 prefix
    extract: bool = True


def file_digest(path: Path, algorithm: str, progress: bool = False) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    from tqdm.auto import tqdm

    h = hashlib.new(algorithm)
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, leave=False,
                                     desc=f"{algorithm} {path.name}", disable=not progress) as bar:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def verify_file(path: Path, spec: RemoteFile, progress: bool = False) -> None:
    """Raise :class:`ChecksumError` naming the file, the expected and the actual value on a mismatch."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise ChecksumError(f"{spec.filename}: size {size} bytes, expected {spec.size} (from {spec.url}); "
                            f"the download was truncated or the file changed on the server")
    for algorithm, expected, prefix in (("md5", spec.md5, False), ("sha256", spec.sha256, False),
                                        ("sha256", spec.sha256_prefix, True)):
        if expected:
            actual = file_digest(path, algorithm, progress)
            matches = actual.startswith(expected.lower()) if prefix else actual == expected.lower()
            if not matches:
                raise ChecksumError(f"{spec.filename}: {algorithm} {actual}, expected "
                                    f"{expected + '...' if prefix else expected} (from {spec.url}); "
                                    f"the file is corrupt or not the one the manifest names")


def looks_like_html(first_bytes: bytes) -> bool:
    """Whether a body starts like an HTML document (``<!DOCTYPE html``, ``<html``, ``<head``,
    ``<body``), after a byte-order mark, white space and ``<!-- comments -->``."""
    head = first_bytes.lower()
    for bom in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):
        head = head.removeprefix(bom)
    if head[1:2] == b"\x00" or head[:1] == b"\x00":  # UTF-16 text: keep the ASCII bytes
        head = head.replace(b"\x00", b"")
    head = head.lstrip()
    while head.startswith(b"<!--") and b"-->" in head:
        head = head[head.index(b"-->") + 3:].lstrip()
    return head.startswith((b"<!doctype", b"<html", b"<head", b"<body"))


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------

@dataclass
class Downloader:
    """Streams files with resume, retries, HTML detection, verification and atomic rename.

    Args:
        retries: attempts after the first one for network errors and 5xx answers.
        backoff: base delay in seconds; attempt ``k`` waits ``backoff * 2**k`` (tests use 0).
        progress: show tqdm progress bars.
        opener: a ``urllib`` opener (e.g. with a cookie jar for a login), default a plain one.
        headers: extra headers that must not follow redirects (authorisation).
        timeout: socket timeout in seconds.
    """

    retries: int = 4
    backoff: float = 2.0
    progress: bool = True
    opener: urllib.request.OpenerDirector | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries={self.retries}: expected 0 or more retries per file")

    def _open(self, url: str, offset: int):
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        for key, value in self.headers.items():
            request.add_unredirected_header(key, value)  # credentials are not sent to redirect targets
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        opener = self.opener or urllib.request.build_opener()
        return opener.open(request, timeout=self.timeout)

    def fetch(self, spec: RemoteFile, dest: Path) -> Path:
        """Make ``dest`` hold the verified file of ``spec``; returns ``dest``.

        An existing verified ``dest`` is kept (nothing downloaded). An existing ``dest`` that fails
        verification is deleted and downloaded again.
        """
        dest = Path(dest)
        if dest.is_file():
            try:
                verify_file(dest, spec, self.progress)
                return dest
            except ChecksumError as err:
                self.log(f"{dest.name}: existing file fails verification ({err}); downloading it again")
                dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        for attempt in range(self.retries + 1):
            try:
                self._stream(spec, part)
                break
            except (HtmlInsteadOfFileError, ChecksumError):
                raise
            except urllib.error.HTTPError as err:
                if err.code < 500 and err.code != 429:
                    raise DownloadError(f"{spec.url}: HTTP {err.code} {err.reason}; check the URL, your "
                                        f"access rights or credentials") from err
                reason = f"HTTP {err.code}"
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                    TimeoutError) as err:
                if isinstance(getattr(err, "reason", None), socket.gaierror):  # DNS: retrying won't help
                    raise DownloadError(f"{spec.url}: cannot resolve the host ({err.reason}); check your "
                                        "internet connection or proxy settings") from err
                reason = f"{type(err).__name__}: {err}"
            if attempt == self.retries:
                resume = (f"run the command again to resume from {part}" if part.is_file()
                          else "run the command again when the host answers")
                raise DownloadError(f"{spec.url}: failed after {self.retries + 1} attempts ({reason}); {resume}")
            delay = self.backoff * 2 ** attempt
            self.log(f"{spec.filename}: {reason}; retrying in {delay:.0f} s "
                     f"(attempt {attempt + 2} of {self.retries + 1})")
            time.sleep(delay)
        try:
            verify_file(part, spec, self.progress)
        except ChecksumError:
            part.unlink(missing_ok=True)  # nothing half-written stays in place
            raise
        os.replace(part, dest)
        return dest

    def _stream(self, spec: RemoteFile, part: Path) -> None:
        """One attempt: append to ``part`` from where it stops (resume) until the server is done."""
        from tqdm.auto import tqdm

        offset = part.stat().st_size if part.is_file() else 0
        try:
            response = self._open(spec.url, offset)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:  # range not satisfiable: the .part is complete, or stale
                total = _range_total(err.headers.get("Content-Range", "") if err.headers else "")
                known = spec.size if spec.size is not None else total
                if known is None or offset == known:
                    return
                part.unlink()
                raise DownloadError(f"{spec.url}: server refused to resume at byte {offset}; "
                                    f"the partial file was removed, run again") from err
            raise
        with response:
            status = getattr(response, "status", 200)
            if offset and status != 206:
                offset = 0  # the server ignored Range and sends the whole file: start over
            content_type = response.headers.get("Content-Type", "")
            if "text/html" in content_type.lower() and not spec.filename.endswith((".html", ".htm")):
                raise HtmlInsteadOfFileError(
                    f"{spec.url} answered with an HTML page (Content-Type {content_type!r}) instead of "
                    f"{spec.filename}: usually a login, licence or error page. Check credentials/access.")
            total = _expected_total(response, offset, spec.size)
            with _open_part(part, append=bool(offset)) as out, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                               unit_divisor=1024, desc=spec.filename,
                                               disable=not self.progress) as bar:
                first = True
                received = 0
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    if first and offset == 0 and looks_like_html(block):
                        out.close()
                        part.unlink(missing_ok=True)
                        raise HtmlInsteadOfFileError(
                            f"{spec.url} sent an HTML document instead of {spec.filename}: usually a "
                            f"login, licence or error page. Check credentials/access.")
                    first = False
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            if total is not None and offset + received < total:  # a short read is a failed attempt
                raise http.client.IncompleteRead(b"", total - offset - received)


def _open_part(part: Path, append: bool):
    """The partial download for writing, without following a link planted under its name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    try:
        return open(os.open(part, flags, 0o644), "ab" if append else "wb")
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DownloadError(f"{part} is a symbolic link: refusing to write the download through it; "
                                f"delete it and run again") from None
        raise


def _range_total(content_range: str) -> int | None:
    """The full size in a ``Content-Range: bytes a-b/N`` (or ``bytes */N``) header, else None."""
    found = re.fullmatch(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*", content_range or "")
    return int(found.group(1)) if found else None


def _expected_total(response, offset: int, size: int | None) -> int | None:
    """Bytes the complete file has, from the answer's headers or the manifest; None when unknown.

    A 206 answer names the full size in ``Content-Range``; a 200 answer's ``Content-Length`` is
    the whole body. Without either, only the manifest's ``size`` can tell a cut connection from
    the end of the file (the archive check after the download catches the rest).
    """
    total = _range_total(response.headers.get("Content-Range", "")) if offset else None
    length = response.headers.get("Content-Length")
    if total is None and length and length.isdigit():
        total = offset + int(length)
    return total if total is not None else size


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

def _inside(target: Path, relative: str) -> bool:
    """Whether ``relative`` (a member name) stays inside ``target`` once joined and normalised."""
    if relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        return False
    joined = os.path.normpath(os.path.join(str(target), relative))
    return joined == str(target) or joined.startswith(str(target) + os.sep)


MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4096
"""The longest file name and path (in bytes) a member may have: Linux's NAME_MAX and PATH_MAX."""


def check_member_name(name: str, target: Path) -> None:
    """Refuse a member whose name no file system stores (a component over 255 bytes, a path over 4096)
    before anything is extracted, instead of an OSError part-way through."""
    parts = name.replace("\\", "/").split("/")
    if len(os.fsencode(os.path.join(str(target), name))) > MAX_PATH_BYTES or \
            any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in parts):
        raise UnsafeArchiveError(f"archive member {name[:80]!r}... has a name longer than a file system allows "
                                 f"({MAX_NAME_BYTES} bytes a name, {MAX_PATH_BYTES} a path below {target}): refused")


def check_tar_members(tar: tarfile.TarFile, target: Path) -> list[tarfile.TarInfo]:
    """Every member of ``tar``, after checking none escapes ``target``; raises :class:`UnsafeArchiveError`."""
    target = Path(os.path.abspath(target))
    members = tar.getmembers()
    for m in members:
        check_member_name(m.name, target)
        if not _inside(target, m.name):
            raise UnsafeArchiveError(f"archive member {m.name!r} would be written outside {target}: refused")
        if m.issym() or m.islnk():
            base = os.path.dirname(m.name) if m.issym() else ""
            if os.path.isabs(m.linkname) or not _inside(target, os.path.join(base, m.linkname)):
                raise UnsafeArchiveError(f"archive member {m.name!r} links to {m.linkname!r} outside {target}: refused")
        if m.ischr() or m.isblk() or m.isfifo():
            raise UnsafeArchiveError(f"archive member {m.name!r} is a device or fifo: refused")
    return members


def check_zip_members(zf: zipfile.ZipFile, target: Path) -> None:
    """Raise :class:`UnsafeArchiveError` when a zip member escapes ``target`` or is a symbolic link."""
    target = Path(os.path.abspath(target))
    for info in zf.infolist():
        check_member_name(info.filename, target)
        if not _inside(target, info.filename) or ".." in PurePosixPath(info.filename.replace("\\", "/")).parts:
            raise UnsafeArchiveError(f"archive member {info.filename!r} would be written outside {target}: refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchiveError(f"archive member {info.filename!r} is a symbolic link: refused")


MAX_EXTRACTED_BYTES = 200 * 2**30
"""The most an archive may unpack to (200 GiB; the largest dataset here, Cityscapes, is about 12 GB)."""
MAX_EXPANSION = 50
"""... and at most this many times its own size plus :data:`EXPANSION_SLACK`: photos barely compress,
a zip of zeros does."""
EXPANSION_SLACK = 2**30


def check_extracted_size(archive: Path, total: int) -> None:
    """Refuse an archive whose members add up to more than the caps (a zip bomb, a sparse tar member)."""
    limit = min(MAX_EXTRACTED_BYTES, MAX_EXPANSION * archive.stat().st_size + EXPANSION_SLACK)
    if total > limit:
        raise UnsafeArchiveError(f"{archive} would unpack to {total / 2**30:.1f} GiB, above the limit of "
                                 f"{limit / 2**30:.1f} GiB for a {archive.stat().st_size / 2**20:.1f} MiB archive "
                                 f"(a decompression bomb, or not the dataset's archive): refused; delete it")


def _tree_bytes(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def check_extracted_tree(folder: Path) -> None:
    """After an external extractor ran: no symbolic link in ``folder`` may point outside it."""
    root = Path(os.path.realpath(folder))
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                real = Path(os.path.realpath(p))
                if real != root and root not in real.parents:
                    raise UnsafeArchiveError(f"extracted link {p} points outside {folder} ({real}): refused")


RAR_TOOLS = {  # program: command line extracting archive $A into folder $D
    "unrar": ["unrar", "x", "-o+", "-y", "{archive}", "{dest}/"],
    "7z": ["7z", "x", "-y", "-o{dest}", "{archive}"],
    "7zz": ["7zz", "x", "-y", "-o{dest}", "{archive}"],
    "unar": ["unar", "-f", "-o", "{dest}", "{archive}"],
    "bsdtar": ["bsdtar", "-x", "-f", "{archive}", "-C", "{dest}"],
}
RAR_INSTALL_HINT = ("no RAR extractor found (tried unrar, 7z, 7zz, unar, bsdtar). Install one, e.g.\n"
                    "    Debian/Ubuntu: sudo apt-get install unar      (or: sudo apt-get install 7zip)\n"
                    "    macOS:         brew install unar              (or: brew install sevenzip)\n"
                    "    conda:         conda install -c conda-forge unar\n"
                    "then run the same smir download command again (the downloaded parts are kept).")


def find_rar_tool(which: Callable[[str], str | None] = shutil.which) -> str:
    """Name of the first available RAR extractor, or :class:`MissingToolError` saying what to install."""
    for tool in RAR_TOOLS:
        if which(tool):
            return tool
    raise MissingToolError(RAR_INSTALL_HINT)


def extract_archive(archive: Path, target: Path, *, strip_top: bool = False, progress: bool = True) -> None:
    """Extract ``archive`` (zip, tar[.gz|.bz2|.xz], or the first part of a RAR set) into ``target``.

    Members are extracted into a staging folder inside ``target`` and moved into place only when
    all checks passed, so a refused archive leaves nothing behind. ``strip_top`` drops a single
    top-level folder (GitHub archives: ``dataset-1.0/...``).
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    staging = target / f".staging-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        name = archive.name.lower()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                check_zip_members(zf, staging)
                check_extracted_size(archive, sum(info.file_size for info in zf.infolist()))  # zipfile
                zf.extractall(staging)  # refuses a member longer than its declared size
        elif name.endswith(".rar"):
            tool = find_rar_tool()
            command = [part.format(archive=str(archive), dest=str(staging)) for part in RAR_TOOLS[tool]]
            done = subprocess.run(command, stdout=subprocess.DEVNULL if not progress else None,
                                  stderr=subprocess.PIPE, text=True)
            if done.returncode != 0:
                raise CorruptArchiveError(f"{tool} failed on {archive} (exit {done.returncode}): "
                                          f"{done.stderr.strip()[-500:]}")
            check_extracted_size(archive, _tree_bytes(staging))  # after the fact: the tool lists no sizes
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = check_tar_members(tar, staging)
                check_extracted_size(archive, sum(m.size for m in members if m.isfile()))  # sparse: full size
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # Python without extraction filters: the explicit checks above still hold
                    tar.extractall(staging, members=members)
        else:
            raise CorruptArchiveError(f"{archive}: not a zip, tar or rar archive (or a truncated one)")
        source = staging
        children = list(staging.iterdir())
        if strip_top and len(children) == 1 and _real_dir(children[0]):
            source = children[0]
        # Links are checked where they will finally live: after stripping the top folder, a link
        # `top/up -> ..` that stayed inside the staging folder would point outside the target.
        check_extracted_tree(source)
        _merge(source, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
            gzip.BadGzipFile) as err:
        raise CorruptArchiveError(f"{archive} is truncated or corrupt ({type(err).__name__}: {err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _real_dir(path: Path) -> bool:
    """A directory that is not a symbolic link (links are never followed while moving files)."""
    return path.is_dir() and not path.is_symlink()


def _merge(src: Path, dst: Path) -> None:
    """Move the tree ``src`` into the existing folder ``dst``; files (and links) replace what is there.

    Links are never followed: a link in ``dst`` where ``src`` has a folder is replaced by the
    folder, so nothing is ever written through a link to somewhere outside ``dst``.
    """
    for child in src.iterdir():
        target = dst / child.name
        if _real_dir(child) and _real_dir(target):
            _merge(child, target)
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        os.replace(child, target)


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """How to obtain one dataset: its files, where they go, and how to check the result."""

    name: str
    files: tuple[RemoteFile, ...]
    folder: str  # under the data folder
    strip_top: bool = False
    auth: str | None = None  # "cityscapes" or "kaggle"
    licence: str = ""


CITYSCAPES_FILE_URL = "https://www.cityscapes-dataset.com/file-handling/?packageID={}"
CITYSCAPES_LOGIN_URL = "https://www.cityscapes-dataset.com/login/"
KAGGLE_URL = "https://www.kaggle.com/api/v1/datasets/download/yueminwang/nassar-2020"
SUGARBEETS_URL = "https://www.ipb.uni-bonn.de/datasets_IJRR2017/annotations/cropweed/ijrr_sugarbeets_2016_annotations.part{:02d}.rar"

# Sizes and checksums: VOC (md5 from the VOC pages), Cityscapes (sha256) and the torchvision
# weights (sha256 prefix in the name) are known. Unknown, and said so: the GitHub-generated CWFID
# tarball (its files are checked one by one against data/cwfid_sha256.txt after extraction), the
# Kaggle Nassar zip and the Sugarbeets RAR parts. For those, a short read is caught from the
# Content-Length / Content-Range headers when the server sends them, and a truncated archive by
# its failed extraction, which deletes it so that the next run downloads it again.
SOURCES: dict[str, Source] = {
    "voc": Source("voc", (
        RemoteFile("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                   "VOCtrainval_11-May-2012.tar", md5="6cd6e144f989b92b3379bac3b3de84fd"),
        RemoteFile("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
                   "VOCtest_06-Nov-2007.tar", md5="b6e924de25625d8de591ea690078ad9f"),
    ), "voc", licence="Flickr images under their owners' terms; annotations for research (PASCAL VOC)"),
    # Cityscapes sha256: torchvision's prototype dataset (pytorch/vision,
    # torchvision/prototype/datasets/_builtin/cityscapes.py, _FILES_CHECKSUMS).
    "cityscapes": Source("cityscapes", (
        RemoteFile(CITYSCAPES_FILE_URL.format(1), "gtFine_trainvaltest.zip",
                   sha256="40461a50097844f400fef147ecaf58b18fd99e14e4917fb7c3bf9c0d87d95884"),
        RemoteFile(CITYSCAPES_FILE_URL.format(3), "leftImg8bit_trainvaltest.zip",
                   sha256="3ccff9ac1fa1d80a6a064407e589d747ed0657aac7dc495a4403ae1235a37525"),
        RemoteFile(CITYSCAPES_FILE_URL.format(4), "leftImg8bit_trainextra.zip",
                   sha256="e41cc14c0c06aad051d52042465d9b8c22bacf6e4c93bb98de273ed7177b7133"),
    ), "cityscapes", auth="cityscapes", licence="Cityscapes licence: non-commercial research, account required"),
    "nassar": Source("nassar", (RemoteFile(KAGGLE_URL, "nassar-2020.zip"),), "nassar", auth="kaggle",
                     licence="see the Kaggle dataset page yueminwang/nassar-2020"),
    "sugarbeets": Source("sugarbeets", tuple(
        RemoteFile(SUGARBEETS_URL.format(i), f"ijrr_sugarbeets_2016_annotations.part{i:02d}.rar",
                   extract=(i == 1)) for i in range(1, 12)),
        "sugarbeets", licence="Sugarbeets 2016 (Chebrolu et al., IJRR 2017): CC BY-NC-SA 4.0"),
    "cwfid": Source("cwfid", (
        RemoteFile("https://github.com/cwfid/dataset/archive/refs/tags/v1.0.tar.gz", "cwfid-dataset-v1.0.tar.gz"),
    ), "cwfid", strip_top=True, licence="CWFID: non-commercial research only, cite Haug & Ostermann 2014"),
    "imagenet-weights": Source("imagenet-weights", (
        RemoteFile("https://download.pytorch.org/models/resnet34-b627a593.pth", "resnet34-b627a593.pth",
                   sha256_prefix="b627a593", extract=False),
        RemoteFile("https://download.pytorch.org/models/resnet18-f37072fd.pth", "resnet18-f37072fd.pth",
                   sha256_prefix="f37072fd", extract=False),
    ), "weights", licence="torchvision ImageNet weights (BSD-3-Clause code; ImageNet terms for the data)"),
}
CHOICES = (*SOURCES, "all")


# --------------------------------------------------------------------------------------------
# Credentials (never echoed, logged or written)
# --------------------------------------------------------------------------------------------

def cityscapes_opener(username: str | None = None, password: str | None = None,
                      interactive: bool = True) -> urllib.request.OpenerDirector:
    """A urllib opener logged in to cityscapes-dataset.com (session cookie), as cityscapesscripts' csDownload."""
    import getpass

    username = username or os.environ.get("CITYSCAPES_USERNAME")
    password = password or os.environ.get("CITYSCAPES_PASSWORD")
    if not (username and password):
        if not (interactive and sys.stdin.isatty()):
            raise MissingToolError("Cityscapes needs an account (https://www.cityscapes-dataset.com/register/): "
                                   "set CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD, or run in a terminal to be asked")
        username = username or input("Cityscapes username: ")
        password = password or getpass.getpass("Cityscapes password: ")
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    headers = {"User-Agent": USER_AGENT, "Referer": CITYSCAPES_LOGIN_URL}
    with opener.open(urllib.request.Request(CITYSCAPES_LOGIN_URL, headers=headers), timeout=60) as response:
        page = response.read(500_000).decode("utf-8", "replace")  # sets the session cookie
    form = {"username": username, "password": password, "submit": "Login"}
    token = re.search(r'name="csrfmiddlewaretoken"\s+value="([^"]+)"', page)
    if token:  # present on some versions of the site
        form["csrfmiddlewaretoken"] = token.group(1)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None  # a 302 answer is the sign of a successful login (as csDownload checks)

    post = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    request = urllib.request.Request(CITYSCAPES_LOGIN_URL, data=urllib.parse.urlencode(form).encode(),
                                     headers=headers)
    try:
        with post.open(request, timeout=60) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    if status != 302:
        raise DownloadError(f"Cityscapes login failed (HTTP {status}): check CITYSCAPES_USERNAME / "
                            f"CITYSCAPES_PASSWORD (the password is not shown here)")
    return opener


def kaggle_credentials() -> tuple[str, str]:
    """Kaggle username and key from ``KAGGLE_USERNAME``/``KAGGLE_KEY`` or ``kaggle.json``."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return user, key
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    token = config_dir / "kaggle.json"
    if token.is_file():
        data = read_json(token, "download a fresh token from https://www.kaggle.com/settings (API > Create New Token)",
                         expect=dict)
        if data.get("username") and data.get("key"):
            return data["username"], data["key"]
        raise MissingToolError(f"{token} lacks 'username' or 'key'; download a fresh token from "
                               f"https://www.kaggle.com/settings (API > Create New Token)")
    raise MissingToolError(
        "Nassar 2020 is downloaded from Kaggle and needs your API token: sign in at https://www.kaggle.com, "
        "open Settings > API > 'Create New Token', save the file as ~/.kaggle/kaggle.json (chmod 600), "
        "or set KAGGLE_USERNAME and KAGGLE_KEY; then run the command again.")


# --------------------------------------------------------------------------------------------
# Layout check and the one-line summary
# --------------------------------------------------------------------------------------------

def verify_cwfid_files(folder: Path, progress: bool = False) -> None:
    """Check every CWFID file against the embedded sha256 list; raise naming the first bad file."""
    listing = Path(__file__).parent / "cwfid_sha256.txt"
    bad, missing = [], []
    for line in listing.read_text().splitlines():
        if not line.strip():
            continue
        digest, rel = line.split(maxsplit=1)
        path = folder / rel.removeprefix("./")
        if not path.is_file():
            missing.append(rel)
        elif file_digest(path, "sha256") != digest:
            bad.append(rel)
    if missing or bad:
        raise ChecksumError(f"CWFID in {folder}: {len(missing)} file(s) missing {missing[:3]}, {len(bad)} with a "
                            f"wrong sha256 {bad[:3]}; delete the folder and run: smir download cwfid")


def layout_summary(name: str, data_dir: Path) -> str:
    """One line: the number of images per split as the datasets see them (or why a split is absent)."""

    if name == "imagenet-weights":
        files = [f.filename for f in SOURCES[name].files if (data_dir / "weights" / f.filename).is_file()]
        return f"imagenet-weights: {', '.join(files)} in {data_dir / 'weights'}"
    counts = []
    for split in ("train", "val", "test", "pool"):
        try:
            counts.append(f"{split} {len(get_dataset(name, split, data_dir))}")
        except (FileNotFoundError, ValueError) as err:
            counts.append(f"{split} - ({str(err).splitlines()[0][:80]})")
    return f"{name}: {', '.join(counts)} images in {data_dir / SOURCES[name].folder}"


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------

def _marker(folder: Path, spec: RemoteFile) -> Path:
    return folder / ".smir_extracted" / f"{spec.filename}.done"


def _verifiable(spec: RemoteFile) -> bool:
    """Whether the manifest knows a size or checksum for ``spec`` (so a bad download is caught)."""
    return any(v is not None for v in (spec.size, spec.md5, spec.sha256, spec.sha256_prefix))


def _failed_extraction(err: CorruptArchiveError, source: Source, spec: RemoteFile, downloads: Path) -> str:
    """Say that an extraction failed; delete the archives that could not be verified, so that
    the next run downloads them again instead of 'verifying' the same truncated file forever."""
    group = [f for f in source.files if f.filename.endswith(".rar")] if spec.filename.endswith(".rar") else [spec]
    unverified = [f for f in group if not _verifiable(f) and (downloads / f.filename).is_file()]
    for f in unverified:
        (downloads / f.filename).unlink()
    if unverified:
        names = ", ".join(f.filename for f in unverified)
        return (f"extracting {spec.filename} failed: {err}. The manifest has no size or checksum for "
                f"{names}, so a cut download could not be told from a complete one: deleted; run the "
                f"same command again to download anew")
    return (f"extracting {spec.filename} failed: {err}. The archive passed its size/checksum check, "
            f"so the download is complete: check the free disk space and the extractor, then run again")


def fetch_source(name: str, data_dir: Path, *, progress: bool = True, retries: int = 4, backoff: float = 2.0,
                 delete_archives: bool = False, sources: dict[str, Source] | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Download, verify and extract dataset ``name`` into ``data_dir/<folder>``; returns that folder.

    Idempotent: archives already extracted (marker present) are neither downloaded nor extracted
    again; files already downloaded are verified, not downloaded.
    """
    source = (sources or SOURCES)[name]
    folder = Path(data_dir) / source.folder
    downloads = folder / "downloads" if any(f.extract for f in source.files) else folder

    def done(spec: RemoteFile) -> bool:
        if spec.extract:
            return _marker(folder, spec).is_file()
        if spec.filename.endswith(".rar"):  # later parts of a RAR set: done once the set is extracted
            return all(_marker(folder, f).is_file() for f in source.files if f.extract)
        return False  # plain files (weights) are verified by Downloader.fetch, not downloaded again

    todo = [f for f in source.files if not done(f)]
    if any(f.filename.endswith(".rar") and f.extract for f in todo):
        find_rar_tool()  # say what to install before downloading gigabytes
    downloader = Downloader(retries=retries, backoff=backoff, progress=progress, log=log)
    if any(not (downloads / f.filename).is_file() for f in todo):
        if source.auth == "cityscapes":
            downloader.opener = cityscapes_opener()
        elif source.auth == "kaggle":
            user, key = kaggle_credentials()
            token = base64.b64encode(f"{user}:{key}".encode()).decode()
            downloader.headers["Authorization"] = f"Basic {token}"
    for spec in todo:
        downloader.fetch(spec, downloads / spec.filename)
    for spec in todo:
        if spec.extract:
            log(f"extracting {spec.filename} into {folder}")
            try:
                extract_archive(downloads / spec.filename, folder, strip_top=source.strip_top, progress=progress)
            except CorruptArchiveError as err:
                raise DownloadError(_failed_extraction(err, source, spec, downloads)) from err
            marker = _marker(folder, spec)
            marker.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(json.dumps({"url": spec.url, "extracted": time.strftime("%Y-%m-%d %H:%M:%S")}), marker)
    if name == "cwfid":
        verify_cwfid_files(folder)
    if delete_archives and downloads != folder:
        for spec in source.files:
            if spec.extract or spec.filename.endswith(".rar"):
                (downloads / spec.filename).unlink(missing_ok=True)
    return folder


def default_data_dir() -> Path:
    """``$SMIR_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get("SMIR_DATA_DIR") or "data")


def _retries(text: str) -> int:
    """``--retries``: an integer, 0 or more."""
    return whole_number(text, 0, "pass 0 (no retry) or more")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smir download``."""
    parser.add_argument("name", choices=CHOICES, help="dataset to fetch, or 'all'")
    parser.add_argument("--root", type=Path, default=None,
                        help="data folder (default: $SMIR_DATA_DIR or ./data); each dataset gets a sub-folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--retries", type=_retries, default=4, help="retries per file on network errors (default 4)")
    parser.add_argument("--delete-archives", action="store_true",
                        help="delete archives after a successful extraction (reruns still skip them)")


def run(args: argparse.Namespace) -> int:
    """``smir download``: fetch each dataset asked for; returns the exit status (0 ok, 1 failed)."""
    data_dir = args.root if args.root is not None else default_data_dir()
    names = [n for n in SOURCES] if args.name == "all" else [args.name]
    status = 0
    for name in names:
        try:
            fetch_source(name, data_dir, progress=not args.quiet, retries=args.retries,
                         delete_archives=args.delete_archives)
            print(layout_summary(name, data_dir))
        except (DownloadError, UnsafeArchiveError, MissingToolError, RuntimeError, OSError) as err:
            print(f"{name}: FAILED: {err}", file=sys.stderr)
            status = 1
    return status
