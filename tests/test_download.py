"""Download machinery against a local HTTP server on 127.0.0.1 that the tests start and feed.

The server serves archives built here and can cut a connection mid-file, ignore or honour
``Range``, answer with an HTML page, or 404. No test touches the internet.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from smir_lib.data import download as dl
from smir_lib.data.download import (
    ChecksumError,
    Downloader,
    DownloadError,
    HtmlInsteadOfFileError,
    MissingToolError,
    RemoteFile,
    Source,
    UnsafeArchiveError,
    extract_archive,
    fetch_source,
)

pytestmark = pytest.mark.unit


class Route:
    """What the server does for one path."""

    def __init__(self, body: bytes, content_type: str = "application/octet-stream", status: int = 200,
                 cut_first_after: int | None = None, honour_range: bool = True, send_length: bool = True):
        self.body, self.content_type, self.status = body, content_type, status
        self.cut_first_after, self.honour_range = cut_first_after, honour_range
        self.send_length = send_length  # False: the body ends when the server closes the connection
        self.requests: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    routes: dict[str, Route] = {}

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        route.requests.append({"range": self.headers.get("Range")})
        if route.status != 200:
            self.send_error(route.status)
            return
        body, status, start = route.body, 200, 0
        rng = self.headers.get("Range")
        if rng and route.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            status = 206
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", route.content_type)
        if route.send_length:
            self.send_header("Content-Length", str(len(payload)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if route.cut_first_after is not None and len(route.requests) == 1:
            self.wfile.write(payload[:route.cut_first_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # cut the connection mid-file
            return
        self.wfile.write(payload)


@pytest.fixture
def server():
    routes: dict[str, Route] = {}
    handler = type("TestHandler", (Handler,), {"routes": routes})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, routes
    httpd.shutdown()
    httpd.server_close()


def make_tar(files: dict[str, bytes], *, links: dict[str, str] | None = None, top: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(top + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(top + name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def quiet_downloader(**kw) -> Downloader:
    return Downloader(progress=False, backoff=0.0, log=lambda msg: None, **kw)


def test_success_streams_verifies_and_renames(server, tmp_path):
    base, routes = server
    body = os.urandom(300_000)
    routes["/f.bin"] = Route(body)
    spec = RemoteFile(f"{base}/f.bin", "f.bin", size=len(body), sha256=sha256(body),
                      md5=hashlib.md5(body).hexdigest())
    out = quiet_downloader().fetch(spec, tmp_path / "f.bin")
    assert out.read_bytes() == body
    assert not (tmp_path / "f.bin.part").exists()


def test_resume_after_cut_connection_uses_range(server, tmp_path):
    base, routes = server
    body = os.urandom(3 * 1024 * 1024)
    routes["/big.bin"] = Route(body, cut_first_after=1024 * 1024 + 17)
    spec = RemoteFile(f"{base}/big.bin", "big.bin", sha256=sha256(body))
    out = quiet_downloader(retries=2).fetch(spec, tmp_path / "big.bin")
    assert out.read_bytes() == body
    assert len(routes["/big.bin"].requests) == 2
    first_range = routes["/big.bin"].requests[1]["range"]
    assert first_range is not None and first_range.startswith("bytes=") and first_range != "bytes=0-"


def test_resume_from_leftover_part_and_server_ignoring_range(server, tmp_path):
    base, routes = server
    body = os.urandom(200_000)
    routes["/r.bin"] = Route(body, honour_range=False)
    (tmp_path / "r.bin.part").write_bytes(body[:50_000])
    spec = RemoteFile(f"{base}/r.bin", "r.bin", sha256=sha256(body))
    out = quiet_downloader().fetch(spec, tmp_path / "r.bin")
    assert out.read_bytes() == body  # 200 instead of 206: started over, no duplicated bytes
    assert routes["/r.bin"].requests[0]["range"] == "bytes=50000-"


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    base, routes = server
    routes["/f.bin"] = Route(b"not what you expected" * 100)
    spec = RemoteFile(f"{base}/f.bin", "f.bin", sha256="0" * 64)
    with pytest.raises(ChecksumError, match=r"f\.bin: sha256 .* expected 0000"):
        quiet_downloader().fetch(spec, tmp_path / "f.bin")
    assert list(tmp_path.iterdir()) == []


def test_sha256_prefix_of_torchvision_weight_names(server, tmp_path):
    base, routes = server
    body = b"weights" * 1000
    routes["/resnet.pth"] = Route(body)
    good = RemoteFile(f"{base}/resnet.pth", "resnet.pth", sha256_prefix=sha256(body)[:8], extract=False)
    assert quiet_downloader().fetch(good, tmp_path / "resnet.pth").is_file()
    bad = RemoteFile(f"{base}/resnet.pth", "resnet2.pth", sha256_prefix="deadbeef", extract=False)
    with pytest.raises(ChecksumError, match="deadbeef"):
        quiet_downloader().fetch(bad, tmp_path / "resnet2.pth")


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_instead_of_archive(server, tmp_path, content_type):
    base, routes = server
    routes["/a.zip"] = Route(b"<!DOCTYPE html><html><body>Please log in</body></html>", content_type=content_type)
    spec = RemoteFile(f"{base}/a.zip", "a.zip")
    with pytest.raises(HtmlInsteadOfFileError, match="HTML"):
        quiet_downloader(retries=3).fetch(spec, tmp_path / "a.zip")
    assert list(tmp_path.iterdir()) == []
    assert len(routes["/a.zip"].requests) == 1  # no pointless retries


def test_404_fails_at_once_naming_url(server, tmp_path):
    base, routes = server
    spec = RemoteFile(f"{base}/missing.tar", "missing.tar")
    with pytest.raises(DownloadError, match=r"missing\.tar: HTTP 404"):
        quiet_downloader(retries=3).fetch(spec, tmp_path / "missing.tar")
    assert list(tmp_path.iterdir()) == []


def test_server_errors_are_retried(server, tmp_path):
    base, routes = server
    routes["/busy"] = Route(b"", status=503)
    spec = RemoteFile(f"{base}/busy", "busy.bin")
    with pytest.raises(DownloadError, match="failed after 3 attempts"):
        quiet_downloader(retries=2).fetch(spec, tmp_path / "busy.bin")
    assert len(routes["/busy"].requests) == 3


@pytest.mark.parametrize("member,link", [("../evil.txt", None), ("/tmp/abs_evil.txt", None),
                                         ("inner/link", "../../outside"), ("inner/abslink", "/etc/passwd")])
def test_tar_traversal_rejected_and_nothing_written(tmp_path, member, link):
    files = {"ok.txt": b"fine"}
    links = {}
    if link is None:
        files[member] = b"evil"
    else:
        links[member] = link
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(make_tar(files, links=links))
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match="refused"):
        extract_archive(archive, target, progress=False)
    assert list(target.iterdir()) == []  # not even the harmless member
    assert not (tmp_path / "evil.txt").exists()


def test_zip_traversal_rejected(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.txt", "fine")
        zf.writestr("../escape.txt", "evil")
    with pytest.raises(UnsafeArchiveError, match="escape.txt"):
        extract_archive(archive, tmp_path / "t", progress=False)
    assert not (tmp_path / "escape.txt").exists()


def test_extract_strips_github_top_folder(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar({"images/1.png": b"x", "README.md": b"r"}, top="dataset-1.0/"))
    extract_archive(archive, tmp_path / "cwfid", strip_top=True, progress=False)
    assert (tmp_path / "cwfid" / "images" / "1.png").read_bytes() == b"x"
    assert not any(p.name.startswith(".staging") for p in (tmp_path / "cwfid").iterdir())


def test_fetch_source_end_to_end_and_idempotent_rerun(server, tmp_path):
    base, routes = server
    tar_bytes = make_tar({"a/1.txt": b"one", "b.txt": b"two"})
    routes["/ds.tar.gz"] = Route(tar_bytes)
    sources = {"toy": Source("toy", (RemoteFile(f"{base}/ds.tar.gz", "ds.tar.gz", sha256=sha256(tar_bytes)),), "toy")}
    folder = fetch_source("toy", tmp_path, progress=False, backoff=0, sources=sources, log=lambda m: None)
    assert (folder / "a" / "1.txt").read_bytes() == b"one"
    assert len(routes["/ds.tar.gz"].requests) == 1
    fetch_source("toy", tmp_path, progress=False, backoff=0, sources=sources, log=lambda m: None)
    assert len(routes["/ds.tar.gz"].requests) == 1  # second run: nothing downloaded


def test_plain_files_rerun_verifies_without_download(server, tmp_path):
    base, routes = server
    body = b"w" * 5000
    routes["/w.pth"] = Route(body)
    sources = {"w": Source("w", (RemoteFile(f"{base}/w.pth", "w.pth", sha256=sha256(body), extract=False),), "weights")}
    for _ in range(2):
        fetch_source("w", tmp_path, progress=False, backoff=0, sources=sources, log=lambda m: None)
    assert (tmp_path / "weights" / "w.pth").read_bytes() == body
    assert len(routes["/w.pth"].requests) == 1


def test_cli_prints_summary_line(server, tmp_path, monkeypatch, capsys):
    """The CLI on a fake VOC archive: download, extract, layout check, one summary line."""
    import numpy as np
    from PIL import Image

    base, routes = server
    files = {}
    for year, split, ids in (("VOC2012", "train", ["a1", "a2"]), ("VOC2012", "val", ["b1"]), ("VOC2007", "test", ["c1"])):
        seg = f"VOCdevkit/{year}/ImageSets/Segmentation/{split}.txt"
        files[seg] = "\n".join(ids).encode()
        for i in ids:
            img, lab = io.BytesIO(), io.BytesIO()
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img, "JPEG")
            Image.fromarray(np.zeros((8, 8), np.uint8), "P").save(lab, "PNG")
            files[f"VOCdevkit/{year}/JPEGImages/{i}.jpg"] = img.getvalue()
            files[f"VOCdevkit/{year}/SegmentationClass/{i}.png"] = lab.getvalue()
    tar_bytes = make_tar(files)
    routes["/voc.tar"] = Route(tar_bytes)
    monkeypatch.setitem(dl.SOURCES, "voc", Source("voc", (RemoteFile(f"{base}/voc.tar", "voc.tar",
                                                                       md5=hashlib.md5(tar_bytes).hexdigest()),), "voc"))
    from smir_lib.tools.cli import main

    assert main(["download", "voc", "--root", str(tmp_path), "--quiet"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("voc: train 2, val 1, test 1, pool 2 images in")
    assert main(["download", "voc", "--root", str(tmp_path), "--quiet"]) == 0
    assert len(routes["/voc.tar"].requests) == 1


def test_missing_rar_tool_says_what_to_install():
    with pytest.raises(MissingToolError, match="apt-get install unar"):
        dl.find_rar_tool(which=lambda name: None)
    assert dl.find_rar_tool(which=lambda name: "/usr/bin/7z" if name == "7z" else None) == "7z"


def test_missing_kaggle_token_message(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    with pytest.raises(MissingToolError, match="kaggle.json"):
        dl.kaggle_credentials()
    (tmp_path / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    assert dl.kaggle_credentials() == ("u", "k")


def test_cityscapes_without_credentials_is_clear(monkeypatch):
    monkeypatch.delenv("CITYSCAPES_USERNAME", raising=False)
    monkeypatch.delenv("CITYSCAPES_PASSWORD", raising=False)
    with pytest.raises(MissingToolError, match="CITYSCAPES_USERNAME"):
        dl.cityscapes_opener(interactive=False)


def test_cityscapes_login_flow_against_local_server(monkeypatch):
    """GET the form (cookie + CSRF token), POST credentials; 302 means logged in, 200 means refused."""
    import urllib.parse

    seen = {}

    class Login(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b'<form><input name="csrfmiddlewaretoken" value="tok123"></form>'
            self.send_response(200)
            self.send_header("Set-Cookie", "session=abc; Path=/")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            seen.update(form=form, cookie=self.headers.get("Cookie"))
            ok = form.get("password") == ["right"] and form.get("csrfmiddlewaretoken") == ["tok123"]
            self.send_response(302 if ok else 200)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Login)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(dl, "CITYSCAPES_LOGIN_URL", f"http://127.0.0.1:{httpd.server_address[1]}/login/")
        assert dl.cityscapes_opener("me", "right", interactive=False) is not None
        assert seen["cookie"] == "session=abc" and seen["form"]["username"] == ["me"]
        with pytest.raises(DownloadError, match="login failed") as info:
            dl.cityscapes_opener("me", "wrong", interactive=False)
        assert "wrong" not in str(info.value)  # the password is never echoed
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_unresolvable_host_fails_at_once_without_a_false_resume_hint(monkeypatch, tmp_path):
    """A DNS failure is not retried (it will not heal in seconds) and names the likely cause."""
    import socket
    import urllib.error

    calls = []

    def no_dns(self, spec, part):
        calls.append(spec.url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(Downloader, "_stream", no_dns)
    spec = RemoteFile("http://example.invalid/data.tar", "data.tar")
    with pytest.raises(DownloadError, match="cannot resolve the host.*internet connection") as err:
        quiet_downloader(retries=3).fetch(spec, tmp_path / "data.tar")
    assert len(calls) == 1 and "resume" not in str(err.value)
    assert not (tmp_path / "data.tar.part").exists()


# --------------------------------------------------------------------------------------------
# Issue 18: links after a stripped top folder, merging through links, truncated downloads
# --------------------------------------------------------------------------------------------

def test_stripped_top_folder_cannot_leave_a_link_out_of_the_target(tmp_path):
    """`ds-1.0/up -> ..` stays inside the staging folder but, once `ds-1.0/` is stripped, points
    out of the dataset folder: refused, and nothing is moved into place."""
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar({"a.txt": b"x"}, links={"up": ".."}, top="ds-1.0/"))
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match="points outside"):
        extract_archive(archive, target, strip_top=True, progress=False)
    assert list(target.iterdir()) == []


def test_merging_never_writes_through_a_link(tmp_path):
    """A link already in the dataset folder (`up -> ../outside`) is replaced by the archive's
    folder of that name, never followed: nothing lands outside the target."""
    outside, target = tmp_path / "outside", tmp_path / "target"
    outside.mkdir()
    target.mkdir()
    (target / "up").symlink_to(outside)
    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(make_tar({"up/evil.txt": b"evil"}, top="ds-1.0/"))
    extract_archive(archive, target, strip_top=True, progress=False)
    assert list(outside.iterdir()) == []
    assert not (target / "up").is_symlink() and (target / "up" / "evil.txt").read_bytes() == b"evil"


def test_truncated_download_without_length_or_checksum_fails_and_is_fetched_again(server, tmp_path):
    """No Content-Length, no size, no checksum: the cut archive fails to extract, says so, is
    deleted, and the next run downloads it again instead of re-'verifying' the truncated file."""
    base, routes = server
    body = make_tar({f"f{i}.bin": os.urandom(20_000) for i in range(5)})
    routes["/ds.tar.gz"] = Route(body, cut_first_after=len(body) // 2, send_length=False)
    sources = {"toy": Source("toy", (RemoteFile(f"{base}/ds.tar.gz", "ds.tar.gz"),), "toy")}
    quiet = dict(progress=False, backoff=0, sources=sources, log=lambda m: None)
    with pytest.raises(DownloadError, match=r"extracting ds\.tar\.gz failed.*truncated or corrupt.*deleted"):
        fetch_source("toy", tmp_path, **quiet)
    assert not (tmp_path / "toy" / "downloads" / "ds.tar.gz").exists()
    folder = fetch_source("toy", tmp_path, **quiet)
    assert (folder / "f4.bin").is_file() and len(routes["/ds.tar.gz"].requests) == 2


def test_short_read_against_the_manifest_size_is_resumed(server, tmp_path):
    """Without a Content-Length, the manifest's size tells a cut connection from the end of the
    file: the attempt fails and the next one resumes with a Range request."""
    base, routes = server
    body = os.urandom(400_000)
    routes["/s.bin"] = Route(body, cut_first_after=150_000, send_length=False)
    spec = RemoteFile(f"{base}/s.bin", "s.bin", size=len(body))
    assert quiet_downloader(retries=2).fetch(spec, tmp_path / "s.bin").read_bytes() == body
    assert routes["/s.bin"].requests[1]["range"] == "bytes=150000-"


def test_every_source_has_a_size_or_checksum_where_one_is_known():
    """Only the files no public record gives a size or checksum for go without one."""
    unknown = {("cwfid", "cwfid-dataset-v1.0.tar.gz"), ("nassar", "nassar-2020.zip")} | {
        ("sugarbeets", f.filename) for f in dl.SOURCES["sugarbeets"].files}
    for name, source in dl.SOURCES.items():
        for f in source.files:
            known = any(v is not None for v in (f.size, f.md5, f.sha256, f.sha256_prefix))
            assert known or (name, f.filename) in unknown, f"{name}: {f.filename} has no size or checksum"
