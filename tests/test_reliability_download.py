"""Issue 29, item 8: extraction caps, HTML pages behind a byte-order mark or a comment, --retries.

A zip of zeros and a 10 GB sparse tar member were written out in full; an HTML error page that
starts with a BOM or a comment was saved as the dataset archive; ``--retries -1`` meant no attempt.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile

import pytest
from test_download import Route, quiet_downloader, server, sha256  # noqa: F401 - server is a fixture

from smir_lib.data import download as dl
from smir_lib.data.download import (
    Downloader,
    DownloadError,
    RemoteFile,
    UnsafeArchiveError,
    extract_archive,
    looks_like_html,
)
from smir_lib.tools.cli import main as cli_main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("body", [
    b"\xef\xbb\xbf<!DOCTYPE html><title>Quota exceeded</title>",
    b"<!-- served by nginx -->\n<html><body>Sign in</body></html>",
    b"\xef\xbb\xbf  <!-- a -->  <!-- b -->\r\n<!doctype HTML>",
    "\ufeff<html><body>error</body></html>".encode("utf-16-le"),
    b"\n\n<head><title>302</title></head>",
])
def test_html_pages_behind_a_bom_or_comments_are_recognised(body):
    assert looks_like_html(body)


@pytest.mark.parametrize("body", [b"PK\x03\x04<html>", b"\x89PNG\r\n", b"<!-- never closed", b"\x1f\x8b\x08<html>"])
def test_archives_are_not_taken_for_html(body):
    assert not looks_like_html(body)


def test_a_zip_of_zeros_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "EXPANSION_SLACK", 0)  # the 1 GiB of slack would need a 1 GiB test file
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(64 * 2**20))  # 64 MiB of zeros: about 64 KiB compressed
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=r"data.zip would unpack to 0.1 GiB, above the limit"):
        extract_archive(archive, target, progress=False)
    assert list(target.iterdir()) == []


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar writes the sparse member")
def test_a_sparse_tar_member_counts_its_full_size(tmp_path):
    sparse = tmp_path / "src" / "big.bin"
    sparse.parent.mkdir()
    with open(sparse, "wb") as handle:
        handle.truncate(10 * 2**30)  # 10 GiB of holes: a few KiB on disk and in the archive
    archive = tmp_path / "data.tar"
    subprocess.run(["tar", "-cSf", str(archive), "-C", str(sparse.parent), "big.bin"], check=True)
    assert archive.stat().st_size < 2**20
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=r"would unpack to 10.0 GiB"):
        extract_archive(archive, target, progress=False)
    assert list(target.iterdir()) == []


def test_negative_retries_are_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(["download", "cwfid", "--retries", "-1"])
    assert stop.value.code == 2 and "--retries: -1 is below 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"retries=-1: expected 0 or more"):
        Downloader(retries=-1)


@pytest.mark.parametrize("dangling", [False, True])
def test_a_planted_part_link_is_never_written_through(server, tmp_path, dangling):
    """A download resumes into ``NAME.part``; a link planted under that name is refused."""
    base, routes = server
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    if not dangling:
        victim.write_text("precious\n")
    (tmp_path / "f.bin.part").symlink_to(victim)
    body = bytes(range(256)) * 64
    routes["/f.bin"] = Route(body)
    with pytest.raises(DownloadError, match=r"f.bin.part is a symbolic link: refusing to write"):
        quiet_downloader(retries=0).fetch(RemoteFile(f"{base}/f.bin", "f.bin", sha256=sha256(body)), tmp_path / "f.bin")
    assert (victim.read_text() if victim.exists() else None) == (None if dangling else "precious\n")


@pytest.mark.parametrize("name", ["b" * 300 + "/f.png", "/".join(["a" * 50] * 100) + "/f.png"])
@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_a_member_name_no_file_system_stores_is_refused_before_writing(tmp_path, name, kind):
    """A 300-byte file name or a 5,000-byte path was an OSError (File name too long) part-way
    through the extraction; it is refused with the other unsafe members, before anything is written."""
    import io
    import tarfile

    archive = tmp_path / f"long.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(name, b"x")
    else:
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UnsafeArchiveError, match=r"has a name longer than a file system allows"):
        extract_archive(archive, tmp_path / "target", progress=False)
    assert not (tmp_path / "target").exists() or list((tmp_path / "target").iterdir()) == []
