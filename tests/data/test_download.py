"""``aras-data download`` against a STAC API and file server this test starts on 127.0.0.1.

The server answers the landing page, ``/conformance`` and ``/search`` (GET and POST) from
static JSON, and serves small GeoTIFFs with HTTP ``Range`` support; it can drop a file
half-way, stall, or demand a bearer token. The real ``pystac-client`` and ``requests``
talk to it; nothing reaches the internet.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

pytest.importorskip("pystac_client")
rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402

from aras400k.cli.data import main  # noqa: E402
from aras400k.data.download import (  # noqa: E402
    STAC_TOKEN_ENV,
    TERRASCOPE_PASSWORD_ENV,
    TERRASCOPE_USER_ENV,
    DownloadItem,
    DownloadPlan,
    download,
    stac_plan,
    terrascope_plan,
)

S2, WC = "s2-rgbnir", "worldcover"
TILE = "ESA_WorldCover_10m_2021_v200_N00E000"
SIZE, RES = 64, 0.001  # a 64 x 64 tile of 0.001 degree pixels at lon 0..0.064, lat 0..0.064
BOX = [0.01, 0.01, 0.02, 0.02]
GEOJSON = "application/geo+json"
CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
]


def _tiff(kind: str) -> bytes:
    """A small Sentinel-2 (4-band uint16) or WorldCover (1-band uint8) GeoTIFF."""
    from rasterio.io import MemoryFile

    rng = np.random.default_rng(0 if kind == S2 else 1)
    if kind == S2:
        data = rng.integers(1, 3000, (4, SIZE, SIZE)).astype(np.uint16)
    else:
        data = rng.choice(np.array([10, 30, 40, 50], dtype=np.uint8), (1, SIZE, SIZE))
    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": data.shape[0],
        "dtype": str(data.dtype),
        "crs": "EPSG:4326",
        "transform": Affine(RES, 0.0, 0.0, 0.0, -RES, SIZE * RES),
        "tiled": True,
        "blockxsize": 32,
        "blockysize": 32,
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
        return bytes(mem.read())


class StacServer:
    """A tiny STAC API + file server; ``items`` maps collection -> item dicts, ``files`` name -> bytes."""

    def __init__(self) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {S2: [], WC: []}
        self.files: dict[str, bytes] = {}
        self.drop_once: set[str] = set()  # files cut half-way on their next request
        self.stall: set[str] = set()  # files that never answer
        self.token: str | None = None  # bearer token the server demands
        self.ranges: list[str] = []  # Range headers received
        self.no_range = False  # answer every request with the whole file
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add_tile(self, kind: str, item_id: str = TILE, href_name: str | None = None, bbox: list[float] | None = None):
        suffix = "_S2RGBNIR.tif" if kind == S2 else "_Map.tif"
        name = href_name or f"{item_id}{suffix}"
        body = _tiff(kind)
        self.files[name] = body
        box = bbox or [0.0, 0.0, SIZE * RES, SIZE * RES]
        w, s, e, n = box
        self.items[kind].append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": item_id,
                "collection": kind,
                "bbox": box,
                "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
                "properties": {"datetime": "2021-06-01T00:00:00Z"},
                "links": [],
                "assets": {
                    "data": {
                        "href": f"{self.url}/files/{name}",
                        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                        "file:size": len(body),
                        "file:checksum": "1220" + hashlib.sha256(body).hexdigest(),
                    }
                },
            }
        )
        return name

    def _search(self, collections: list[str], bbox: list[float]) -> dict[str, Any]:
        def hits(item: dict[str, Any]) -> bool:
            w, s, e, n = item["bbox"]
            return w < bbox[2] and bbox[0] < e and s < bbox[3] and bbox[1] < n

        feats = [i for c in collections for i in self.items.get(c, []) if hits(i)]
        return {"type": "FeatureCollection", "features": feats, "links": []}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, body: dict[str, Any], status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    self._json({"code": "Unauthorized", "description": "bad token"}, 401)
                    return False
                return True

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if not self._authorised():
                    return
                if url.path in ("/", ""):
                    self._json(
                        {
                            "type": "Catalog",
                            "stac_version": "1.0.0",
                            "id": "test",
                            "description": "test STAC API",
                            "conformsTo": CONFORMS,
                            "links": [
                                {"rel": "self", "href": f"{server.url}/", "type": "application/json"},
                                {"rel": "root", "href": f"{server.url}/", "type": "application/json"},
                                {"rel": "search", "href": f"{server.url}/search", "method": "GET", "type": GEOJSON},
                                {"rel": "search", "href": f"{server.url}/search", "method": "POST", "type": GEOJSON},
                            ],
                        }
                    )
                elif url.path == "/conformance":
                    self._json({"conformsTo": CONFORMS})
                elif url.path == "/search":
                    q = parse_qs(url.query)
                    bbox = [float(v) for v in q["bbox"][0].split(",")]
                    self._json(server._search(q["collections"][0].split(","), bbox))
                elif url.path.startswith("/files/"):
                    self._file(url.path.removeprefix("/files/"))
                else:
                    self._json({"code": "NotFound"}, 404)

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._json(server._search(body["collections"], body["bbox"]))

            def _file(self, name: str) -> None:
                data = server.files[name]
                if name in server.stall:
                    time.sleep(3)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and server.no_range:
                    server.ranges.append("ignored " + rng)
                    rng = None
                if rng:
                    server.ranges.append(rng)
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if name in server.drop_once:
                    server.drop_once.discard(name)
                    self.wfile.write(data[start : start + (len(data) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stac(monkeypatch: pytest.MonkeyPatch) -> Iterator[StacServer]:
    monkeypatch.delenv(STAC_TOKEN_ENV, raising=False)
    server = StacServer()
    server.add_tile(S2)
    server.add_tile(WC)
    yield server
    server.close()


def _cli(stac: StacServer, out: Path, *extra: str) -> int:
    args = ["download", "--source", "stac", "--stac_url", f"{stac.url}/", "--bbox", *map(str, BOX), "--out", str(out)]
    return main([*args, "--s2_collection", S2, "--worldcover_collection", WC, "--quiet", "true", *extra])


def test_a_plan_from_a_stac_api_lists_both_kinds_with_sizes_and_checksums(stac: StacServer) -> None:
    plan = stac_plan(f"{stac.url}/", BOX, 2021, (S2, WC))
    assert [i.path for i in plan.items] == [f"s2/{TILE}_S2RGBNIR.tif", f"worldcover/{TILE}_Map.tif"]
    assert [i.size for i in plan.items] == [len(stac.files[f"{TILE}_S2RGBNIR.tif"]), len(stac.files[f"{TILE}_Map.tif"])]
    assert all(i.checksum and i.checksum.startswith("sha256:") for i in plan.items)
    assert plan.total_size == sum(len(b) for b in stac.files.values())


def test_a_dropped_connection_leaves_a_part_file_and_a_rerun_resumes_and_verifies(stac: StacServer, tmp_path) -> None:
    out = tmp_path / "raw"
    plan = stac_plan(f"{stac.url}/", BOX, 2021, (S2, WC))
    s2_name = f"{TILE}_S2RGBNIR.tif"
    stac.drop_once.add(s2_name)
    with pytest.raises(OSError, match=f"{stac.url}/files/{s2_name}: connection lost"):
        download(plan, out, workers=2, retries=0, progress=False)
    part = out / "s2" / f"{s2_name}.part"
    assert part.exists() and 0 < part.stat().st_size < len(stac.files[s2_name])
    assert not (out / "s2" / s2_name).exists()
    assert (out / "worldcover" / f"{TILE}_Map.tif").exists()  # the other file finished

    kept = part.stat().st_size
    report = download(plan, out, workers=2, progress=False)
    assert stac.ranges == [f"bytes={kept}-"]  # only the missing end was asked for
    assert report.fetched == [f"s2/{s2_name}"] and report.skipped == [f"worldcover/{TILE}_Map.tif"]
    assert (out / "s2" / s2_name).read_bytes() == stac.files[s2_name]
    assert not part.exists()
    assert report.bytes == len(stac.files[s2_name]) - kept

    again = download(plan, out, progress=False)  # nothing left to fetch
    assert again.fetched == [] and len(again.skipped) == 2


def test_a_retry_in_the_same_run_resumes_the_part_file(stac: StacServer, tmp_path) -> None:
    stac.drop_once.add(f"{TILE}_S2RGBNIR.tif")
    download(stac_plan(f"{stac.url}/", BOX, 2021, (S2, WC)), tmp_path, retries=1, progress=False)
    assert (tmp_path / "s2" / f"{TILE}_S2RGBNIR.tif").read_bytes() == stac.files[f"{TILE}_S2RGBNIR.tif"]
    assert len(stac.ranges) == 1


def test_a_server_without_range_support_restarts_the_file(stac: StacServer, tmp_path, capsys) -> None:
    name = f"{TILE}_S2RGBNIR.tif"
    plan = stac_plan(f"{stac.url}/", BOX, 2021, (S2, WC))
    stac.drop_once.add(name)
    with pytest.raises(OSError, match="connection lost"):
        download(plan, tmp_path, retries=0, progress=False)
    stac.no_range = True
    report = download(plan, tmp_path, workers=1, progress=True)
    assert stac.ranges and stac.ranges[0].startswith("ignored bytes=")
    assert (tmp_path / "s2" / name).read_bytes() == stac.files[name]
    assert report.bytes == len(stac.files[name])  # the whole file again
    bar = capsys.readouterr().err
    assert "download: 100%" in bar and "B/s" in bar  # a progress bar in bytes


def test_a_damaged_file_is_fetched_again_and_a_bad_checksum_is_refused(stac: StacServer, tmp_path) -> None:
    plan = stac_plan(f"{stac.url}/", BOX, 2021, (S2, WC))
    download(plan, tmp_path, progress=False)
    target = tmp_path / "worldcover" / f"{TILE}_Map.tif"
    target.write_bytes(bytes(len(target.read_bytes())))  # same size, wrong bytes
    assert download(plan, tmp_path, progress=False).fetched == [f"worldcover/{TILE}_Map.tif"]
    assert target.read_bytes() == stac.files[f"{TILE}_Map.tif"]

    item = plan.items[1]
    wrong = DownloadPlan([DownloadItem(item.url, "worldcover/other_Map.tif", item.size, "sha256:" + "0" * 64)])
    with pytest.raises(OSError, match="failed verification .sha256 checksum mismatch"):
        download(wrong, tmp_path, progress=False)
    assert not (tmp_path / "worldcover" / "other_Map.tif").exists()


def test_a_server_that_stops_answering_is_named(stac: StacServer, tmp_path) -> None:
    stac.stall.add(f"{TILE}_Map.tif")
    plan = stac_plan(f"{stac.url}/", BOX, 2021, (S2, WC))
    with pytest.raises(OSError, match=f"{stac.url}/files/{TILE}_Map.tif: no answer within 0.5 s"):
        download(plan, tmp_path, timeout=0.5, progress=False)


def test_dry_run_lists_files_and_total_and_writes_nothing(stac: StacServer, tmp_path, capsys) -> None:
    out = tmp_path / "raw"
    assert _cli(stac, out, "--dry_run", "true") == 0
    printed = capsys.readouterr().out
    assert f"s2/{TILE}_S2RGBNIR.tif" in printed and f"worldcover/{TILE}_Map.tif" in printed
    assert "2 files, " in printed and "KiB" in printed
    assert not out.exists()


def test_a_box_with_no_coverage_is_one_line(stac: StacServer, tmp_path, capsys) -> None:
    args = ["download", "--source", "stac", "--stac_url", f"{stac.url}/", "--out", str(tmp_path / "raw")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--bbox", "10", "10", "11", "11", "--s2_collection", S2, "--worldcover_collection", WC])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"aras-data: error: no tiles of collection {S2} cover bbox 10 10 11 11 in 2021"


def test_a_stac_server_refusing_the_token_names_the_variable_not_its_value(
    stac: StacServer, tmp_path, capsys, monkeypatch
) -> None:
    stac.token = "right-token"
    monkeypatch.setenv(STAC_TOKEN_ENV, "wrong-token-s3cret")
    with pytest.raises(SystemExit):
        _cli(stac, tmp_path / "raw")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and STAC_TOKEN_ENV in err and "401" in err
    assert "s3cret" not in err
    monkeypatch.setenv(STAC_TOKEN_ENV, "right-token")
    assert _cli(stac, tmp_path / "raw") == 0  # the token also reaches the file server (same host)


def test_hostile_names_stay_inside_out(stac: StacServer, tmp_path) -> None:
    stac.items = {S2: [], WC: []}
    stac.add_tile(S2, item_id="../../escape", href_name="data.tif")
    stac.add_tile(WC, item_id="/etc/x", href_name="..%2F..%2Fevil_Map.tif")
    plan = stac_plan(f"{stac.url}/", BOX, 2021, (S2, WC), assets=("data", "data"))
    assert [i.path for i in plan.items] == ["s2/escape_S2RGBNIR.tif", "worldcover/evil_Map.tif"]
    out = tmp_path / "out"
    download(plan, out, progress=False)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.tif")) == [
        "out/s2/escape_S2RGBNIR.tif",
        "out/worldcover/evil_Map.tif",
    ]
    for bad in ("../x_Map.tif", "/tmp/x_Map.tif", "worldcover/../../x_Map.tif"):
        with pytest.raises(ValueError, match="refusing to write"):
            download(DownloadPlan([DownloadItem(plan.items[1].url, bad)]), out, progress=False)


def test_the_downloaded_folder_feeds_prepare(stac: StacServer, tmp_path, capsys) -> None:
    raw = tmp_path / "raw"
    assert _cli(stac, raw) == 0
    assert "next: aras-data prepare" in capsys.readouterr().out
    args = ["prepare", "--s2", str(raw / "s2"), "--worldcover", str(raw / "worldcover"), "--out", str(tmp_path / "sh")]
    assert main([*args, "--patch_size", "32", "--ratios", "[1, 0, 0]"]) == 0
    assert json.loads((tmp_path / "sh" / "train" / "manifest.json").read_text())["num_samples"] == 4


class _FakeCatalogue:
    """Stands in for ``terracatalogueclient.Catalogue``: checks credentials, answers from a dict."""

    def __init__(self, products: dict[str, list[Any]], password: str = "good") -> None:
        self.products, self.password, self.searched = products, password, []
        self._auth = None

    def authenticate_non_interactive(self, username: str, password: str) -> _FakeCatalogue:
        self.user, self.given = username, password
        return self

    def get_products(self, collection: str, **kwargs: Any) -> list[Any]:
        if self.given != self.password:
            raise type("InvalidGrantRequest", (Exception,), {})(f"invalid_grant for {self.user}:{self.given}")
        self.searched.append((collection, kwargs))
        return self.products.get(collection, [])


def _product(pid: str, *names: str) -> Any:
    files = [SimpleNamespace(href=f"https://services.terrascope.be/download/{n}", length=123) for n in names]
    return SimpleNamespace(id=pid, data=files)


def test_terrascope_plan_uses_the_published_collections(monkeypatch) -> None:
    monkeypatch.setenv(TERRASCOPE_USER_ENV, "me")
    monkeypatch.setenv(TERRASCOPE_PASSWORD_ENV, "good")
    s2, wc = "urn:eop:VITO:ESA_WorldCover_S2RGBNIR_10m_2021_V2", "urn:eop:VITO:ESA_WorldCover_10m_2021_V2"
    cat = _FakeCatalogue({s2: [_product("a", f"{TILE}_S2RGBNIR.tif")], wc: [_product("b", f"{TILE}_Map.tif", "q.tif")]})
    plan = terrascope_plan(BOX, 2021, catalogue=cat)
    assert [c for c, _ in cat.searched] == [s2, wc]
    assert cat.searched[0][1] == {"start": "2021-01-01", "end": "2021-12-31", "bbox": BOX}
    assert [(i.path, i.size) for i in plan.items] == [
        (f"s2/{TILE}_S2RGBNIR.tif", 123),
        (f"worldcover/{TILE}_Map.tif", 123),
    ]


def test_terrascope_refusing_the_credentials_names_the_variables_not_the_values(monkeypatch, capsys) -> None:
    from aras400k.cli import run_command

    monkeypatch.setenv(TERRASCOPE_USER_ENV, "me")
    monkeypatch.setenv(TERRASCOPE_PASSWORD_ENV, "hunter2-s3cret")
    with pytest.raises(SystemExit) as exit_info:
        run_command("aras-data", lambda: terrascope_plan(BOX, 2021, catalogue=_FakeCatalogue({})) and 0)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and TERRASCOPE_PASSWORD_ENV in err and TERRASCOPE_USER_ENV in err
    assert "s3cret" not in err


def test_terrascope_without_credentials_or_coverage(monkeypatch) -> None:
    monkeypatch.delenv(TERRASCOPE_USER_ENV, raising=False)
    with pytest.raises(ValueError, match=f"needs {TERRASCOPE_USER_ENV} and {TERRASCOPE_PASSWORD_ENV} set"):
        terrascope_plan(BOX, 2021, catalogue=_FakeCatalogue({}))
    monkeypatch.setenv(TERRASCOPE_USER_ENV, "me")
    monkeypatch.setenv(TERRASCOPE_PASSWORD_ENV, "good")
    with pytest.raises(ValueError, match="no tiles of collection urn:eop:VITO:ESA_WorldCover_S2RGBNIR_10m_2021_V2"):
        terrascope_plan(BOX, 2021, catalogue=_FakeCatalogue({}))


@pytest.mark.slow  # runs aras-data download and prepare as subprocesses (about 13 s on a busy 2-core CPU)
def test_the_pipeline_data_stage_downloads_then_prepares(stac: StacServer, tmp_path, capsys) -> None:
    import yaml

    from aras400k.cli.pipeline import main as pipeline_main

    config = {
        "run_dir": str(tmp_path / "run"),
        "data": {
            "command": "download",
            "options": {"patch_size": 32, "ratios": [0.5, 0.25, 0.25]},
            "download": {
                "options": {
                    "bbox": BOX,
                    "source": "stac",
                    "stac_url": f"{stac.url}/",
                    "s2_collection": S2,
                    "worldcover_collection": WC,
                    "quiet": True,
                }
            },
        },
    }
    path = tmp_path / "region.yaml"
    path.write_text(yaml.safe_dump(config))
    assert pipeline_main(["--config", str(path), "--only", "[data]"]) == 0
    raw = tmp_path / "run" / "data" / "raw"
    assert (raw / "s2" / f"{TILE}_S2RGBNIR.tif").read_bytes() == stac.files[f"{TILE}_S2RGBNIR.tif"]
    counts = [
        json.loads((tmp_path / "run" / "data" / "real" / s / "manifest.json").read_text())["num_samples"]
        for s in ("train", "val", "test")
    ]
    assert sum(counts) == 4


def test_terrascope_products_without_the_expected_file_are_named(monkeypatch) -> None:
    monkeypatch.setenv(TERRASCOPE_USER_ENV, "me")
    monkeypatch.setenv(TERRASCOPE_PASSWORD_ENV, "good")
    s2 = "urn:eop:VITO:ESA_WorldCover_S2RGBNIR_10m_2021_V2"
    with pytest.raises(ValueError, match=f"1 products of {s2} cover the box but none has a \\*_S2RGBNIR.tif"):
        terrascope_plan(BOX, 2021, catalogue=_FakeCatalogue({s2: [_product("a", "quicklook.png")]}))
