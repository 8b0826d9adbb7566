"""Downloader tests against a local HTTP server on 127.0.0.1 (no internet): range resume after an
interrupted transfer, restart when ranges are ignored, size and zip checks, skipping done parts, CLI."""
import io, json, os, re, threading, zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cosypose_nb.core import InputError
from cosypose_nb.datasets.download import (DATASETS, DownloadError, PARTS, check_zip, download, download_cli, fetch, part_url, unpack)


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _fake_dataset(name: str, seed: int = 0) -> tuple[dict[str, bytes], dict[str, bytes]]:
    "Archives laid out like BOP's (base: the dataset folder itself; models/test: its content) and the files they hold."
    rng = np.random.default_rng(seed)
    files = {
        "camera.json": json.dumps({"fx": 1.0}).encode(),
        "test_targets_bop19.json": b"[]",
        "models/models_info.json": b"{}",
        "models/obj_000001.ply": rng.bytes(50_000),
        "test/000001/scene_gt.json": b"{}",
        "test/000001/rgb/000001.png": rng.bytes(300_000),   # incompressible: the archive is big enough to cut
        "test/000002/rgb/000001.png": rng.bytes(200_000),
    }
    parts = DATASETS[name]["parts"]
    archives = {
        parts["base"][1]: _zip({f"{name}/": b"", f"{name}/camera.json": files["camera.json"],
                                f"{name}/test_targets_bop19.json": files["test_targets_bop19.json"]}),
        parts["models"][1]: _zip({k: v for k, v in files.items() if k.startswith("models/")}),
        parts["test"][1]: _zip({k: v for k, v in files.items() if k.startswith("test/")}),
    }
    return archives, files


class Server:
    """Serves `files` (name -> bytes) with Range support. `cut[name] = n`: the first `len(cuts)` GETs of
    that file send full headers but only n bytes, then drop the connection. Records every request."""

    def __init__(self, files, ranges=True):
        self.files, self.ranges, self.cut, self.log = dict(files), ranges, {}, []
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                srv.log.append((name, rng))
                data = srv.files.get(name)
                if data is None:
                    self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
                start = 0
                if rng and srv.ranges:
                    m = re.fullmatch(r"bytes=(\d+)-", rng)
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416); self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0"); self.end_headers(); return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                cuts = srv.cut.get(name)
                if cuts:
                    n = cuts.pop(0)
                    self.wfile.write(body[:n]); self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start(); return self

    def __exit__(self, *exc):
        self.httpd.shutdown(); self.httpd.server_close(); self.thread.join(timeout=5)


def _check_tree(ds_dir: Path, files: dict[str, bytes]):
    for rel, data in files.items():
        assert (ds_dir / rel).read_bytes() == data, rel


KW = dict(progress=False, wait=0.0, timeout=10.0)


@pytest.mark.parametrize("name", ["ycbv", "tless", "hb"])
def test_interrupted_download_resumes_with_range(tmp_path, name):
    archives, files = _fake_dataset(name)
    test_file = DATASETS[name]["parts"]["test"][1]
    with Server(archives) as srv:
        n_cut = len(archives[test_file]) // 3
        srv.cut[test_file] = [n_cut]
        # first call: no retry allowed, so it stops after the broken transfer and keeps the .part
        with pytest.raises(DownloadError, match="run again to resume"):
            download(name, tmp_path, url_base=srv.url, retries=0, **KW)
        part = tmp_path / ".archives" / (test_file + ".part")
        assert part.stat().st_size == n_cut
        assert (tmp_path / name / ".done_base").exists() and (tmp_path / name / ".done_models").exists()
        assert not (tmp_path / name / ".done_test").exists()
        n_before = len(srv.log)
        download(name, tmp_path, url_base=srv.url, retries=0, **KW)
        # only the test archive was asked for again, and from where it stopped
        assert srv.log[n_before:] == [(test_file, f"bytes={n_cut}-")]
    _check_tree(tmp_path / name, files)
    assert not part.exists() and not list((tmp_path / ".archives").iterdir())   # archives removed once unpacked
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".unpack")]


def test_automatic_retry_resumes_within_one_call(tmp_path):
    archives, files = _fake_dataset("ycbv", seed=1)
    f = "ycbv_test_bop19.zip"
    with Server(archives) as srv:
        L = len(archives[f])
        srv.cut[f] = [L // 4, L // 4]                # two broken transfers, each resumed
        download("ycbv", tmp_path, retries=3, url_base=srv.url, **KW)
        ranges = [r for n, r in srv.log if n == f]
    assert ranges == [None, f"bytes={L // 4}-", f"bytes={2 * (L // 4)}-"]
    _check_tree(tmp_path / "ycbv", files)


def test_server_without_ranges_restarts(tmp_path):
    archives, files = _fake_dataset("lmo", seed=2)
    f = "lmo_test_bop19.zip"
    with Server(archives, ranges=False) as srv:
        srv.cut[f] = [len(archives[f]) // 2]
        download("lmo", tmp_path, retries=2, url_base=srv.url, **KW)
    _check_tree(tmp_path / "lmo", files)


def test_retries_are_bounded(tmp_path):
    archives, _ = _fake_dataset("tudl", seed=3)
    f = "tudl_models.zip"
    with Server(archives) as srv:
        srv.cut[f] = [1000] * 10
        with pytest.raises(DownloadError, match=r"after 3 attempts"):
            fetch(f"{srv.url}/{f}", tmp_path / f, retries=2, **KW)
        assert len([1 for n, _ in srv.log if n == f]) == 3
    assert (tmp_path / (f + ".part")).stat().st_size == 3000


def test_complete_part_file_is_finished_on_416(tmp_path):
    data = _zip({"a.txt": b"x" * 1000})
    with Server({"a.zip": data}) as srv:
        (tmp_path / "a.zip.part").write_bytes(data)
        out = fetch(f"{srv.url}/a.zip", tmp_path / "a.zip", retries=0, **KW)
    assert out.read_bytes() == data


def test_parts_already_done_are_skipped_and_can_be_added(tmp_path):
    archives, files = _fake_dataset("icbin", seed=4)
    with Server(archives) as srv:
        download("icbin", tmp_path, parts=["models"], url_base=srv.url, **KW)
        assert [n for n, _ in srv.log] == ["icbin_models.zip"]
        download("icbin", tmp_path, url_base=srv.url, **KW)
        assert sorted(n for n, _ in srv.log[1:]) == ["icbin_base.zip", "icbin_test_bop19.zip"]
        k = len(srv.log)
        download("icbin", tmp_path, url_base=srv.url, **KW)
        assert len(srv.log) == k
    _check_tree(tmp_path / "icbin", files)
    info = json.loads((tmp_path / "icbin" / ".done_test").read_text())
    assert info["file"] == "icbin_test_bop19.zip" and info["entries"] == ["test"]


def test_broken_archive_is_reported_and_dropped(tmp_path):
    archives, _ = _fake_dataset("itodd", seed=5)
    archives["itodd_models.zip"] = archives["itodd_models.zip"][:-200]   # truncated: no central directory
    with Server(archives) as srv:
        with pytest.raises(DownloadError, match="itodd_models.zip.*not a valid zip"):
            download("itodd", tmp_path, parts=["models"], url_base=srv.url, **KW)
    assert not (tmp_path / "itodd" / ".done_models").exists()
    assert not (tmp_path / ".archives" / "itodd_models.zip").exists()


def test_corrupted_member_fails_crc_and_leaves_no_partial_tree(tmp_path):
    data = bytearray(_zip({"models/a.bin": bytes(range(256)) * 100}))
    i = data.find(bytes(range(256)))
    data[i + 10] ^= 0xFF                              # flip a byte inside the stored member
    arc = tmp_path / "x.zip"; arc.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="broken archive"):
        unpack(arc, tmp_path / "ds")
    assert not (tmp_path / "ds" / "models").exists()


def test_zip_slip_is_refused(tmp_path):
    for bad in ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"]:
        arc = tmp_path / "bad.zip"
        arc.write_bytes(_zip({"ok.txt": b"1", bad: b"2"}))
        with pytest.raises(DownloadError, match="outside the target folder"):
            check_zip(arc)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_http_errors_and_bad_names(tmp_path):
    with Server({}) as srv:
        with pytest.raises(DownloadError, match="HTTP 404"):
            fetch(f"{srv.url}/missing.zip", tmp_path / "m.zip", retries=3, **KW)
        assert len(srv.log) == 1                    # a 404 is not retried
    with pytest.raises(InputError, match="unknown BOP dataset"):
        download("nope", tmp_path)
    with pytest.raises(InputError, match="unknown part"):
        download("ycbv", tmp_path, parts=["base", "extras"])


def test_urls_and_env_override(monkeypatch):
    for name, d in DATASETS.items():
        for p in PARTS:
            repo, file = d["parts"][p]
            assert part_url(name, p) == f"https://huggingface.co/datasets/bop-benchmark/{repo}/resolve/main/{file}"
            assert file.endswith(".zip") and file.startswith(repo + "_")
    assert DATASETS["tless"]["parts"]["test"][1] == "tless_test_primesense_bop19.zip"
    assert DATASETS["ycbv"]["parts"]["test"][1] == "ycbv_test_bop19.zip"
    monkeypatch.setenv("COSYPOSE_NB_BOP_URL", "http://mirror.local/bop")
    assert part_url("ycbv", "models") == "http://mirror.local/bop/ycbv_models.zip"
    assert part_url("ycbv", "models", "http://other/{repo}/{file}") == "http://other/ycbv/ycbv_models.zip"


def test_cli(tmp_path, capsys):
    assert download_cli(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ["ycbv", "tless", "lmo", "tudl", "icbin", "itodd", "hb"]:
        assert f"https://huggingface.co/datasets/bop-benchmark/{name}/resolve/main/{name}_base.zip" in out
    assert download_cli([]) == 2
    archives, files = _fake_dataset("ycbv", seed=6)
    with Server(archives) as srv:
        srv.cut["ycbv_models.zip"] = [1234]
        rc = download_cli(["ycbv", "--out", str(tmp_path), "--url-base", srv.url, "--no-progress", "--keep-archives"])
        assert rc == 0
        assert download_cli(["ycbv", "--out", str(tmp_path), "--url-base", srv.url + "/nothing-here", "--no-progress"]) == 0
    _check_tree(tmp_path / "ycbv", files)
    assert (tmp_path / ".archives" / "ycbv_models.zip").read_bytes() == archives["ycbv_models.zip"]
    with Server({}) as srv:
        assert download_cli(["ycbv", "--parts", "train_pbr", "--out", str(tmp_path), "--url-base", srv.url, "--no-progress"]) == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_downloaded_toy_dataset_reads_as_bop(tmp_path):
    "End to end: a toy BOP dataset packed like the real archives, served, downloaded, and read by BOPDataset."
    from cosypose_nb.datasets.bop import BOPDataset, make_toy_dataset
    src = make_toy_dataset(tmp_path / "src" / "tudl", n_scenes=2, n_images=2)
    def pack(folder, prefix):
        return _zip({f"{prefix}/{p.relative_to(folder)}": p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})
    archives = {"tudl_base.zip": _zip({"tudl/test_targets_bop19.json": (src / "test_targets_bop19.json").read_bytes()}),
                "tudl_models.zip": pack(src / "models", "models"), "tudl_test_bop19.zip": pack(src / "test", "test")}
    with Server(archives) as srv:
        srv.cut["tudl_test_bop19.zip"] = [len(archives["tudl_test_bop19.zip"]) // 2]
        ds_dir = download("tudl", tmp_path / "data", url_base=srv.url, retries=1, **KW)
    a, b = BOPDataset(src, targets=True, load_depth=True), BOPDataset(ds_dir, targets=True, load_depth=True)
    assert len(a) == len(b) == 4
    for i in range(len(a)):
        assert (a[i].rgb == b[i].rgb).all() and (a[i].depth == b[i].depth).all()
        assert np.array_equal(a[i].poses().numpy(), b[i].poses().numpy())


def test_bad_addresses_and_arguments_are_input_errors(tmp_path, capsys):
    "Bad --url-base templates, addresses without a scheme, negative --retries and unknown names: exit 2, one line, nothing fetched."
    for base in ("http://x/{file}/{foo}", "http://x/{file}{", "http://x/{0}{file}", "notaurl", "ftp2://x"):
        with pytest.raises(InputError, match="url-base"):
            part_url("tudl", "models", base)
        assert download_cli(["tudl", "--parts", "models", "--url-base", base, "--out", str(tmp_path / "o")]) == 2
        assert "url-base" in capsys.readouterr().err
        assert download_cli(["--list", "--url-base", base]) == 2
    assert download_cli(["tudl", "--retries", "-3", "--out", str(tmp_path / "o")]) == 2
    assert "--retries" in capsys.readouterr().err
    with pytest.raises(InputError, match="retries"):
        fetch("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", retries=-1)
    # every name is checked before the first download starts
    assert download_cli(["ycbv", "foo", "--url-base", "http://127.0.0.1:9", "--out", str(tmp_path / "o")]) == 2
    assert "foo" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert part_url("tudl", "models", "file:///srv/bop").startswith("file:///srv/bop/")
