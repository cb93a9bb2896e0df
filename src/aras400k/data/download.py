"""Find and fetch the Sentinel-2 RGBNIR and WorldCover tiles covering a bounding box (``docs/mapping.md``).

:func:`terrascope_plan` (the published downloader's catalogue; credentials from
:data:`TERRASCOPE_USER_ENV` and :data:`TERRASCOPE_PASSWORD_ENV`) or :func:`stac_plan` (any
STAC API; an optional bearer token from :data:`STAC_TOKEN_ENV`) builds a :class:`DownloadPlan`;
:func:`download` fetches it, resumably, into the ``OUT/s2`` and ``OUT/worldcover`` that
``aras-data prepare`` reads. Secrets travel only in request headers or the catalogue client.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aras400k.errors import check_at_least

__all__ = [
    "DEFAULT_STAC_COLLECTIONS",
    "DEFAULT_TERRASCOPE_COLLECTIONS",
    "STAC_TOKEN_ENV",
    "TERRASCOPE_PASSWORD_ENV",
    "TERRASCOPE_USER_ENV",
    "DownloadItem",
    "DownloadPlan",
    "DownloadReport",
    "download",
    "stac_plan",
    "terrascope_plan",
]

#: Environment variable holding the Terrascope user name.
TERRASCOPE_USER_ENV = "TERRASCOPE_USERNAME"
#: Environment variable holding the Terrascope password.
TERRASCOPE_PASSWORD_ENV = "TERRASCOPE_PASSWORD"
#: Environment variable holding an optional STAC API bearer token.
STAC_TOKEN_ENV = "ARAS_STAC_TOKEN"

#: Terrascope collections of the published downloader, by year: (S2 RGBNIR, WorldCover map).
DEFAULT_TERRASCOPE_COLLECTIONS: dict[int, tuple[str, str]] = {
    2020: ("urn:eop:VITO:ESA_WorldCover_S2RGBNIR_10m_2020_V1", "urn:eop:VITO:ESA_WorldCover_10m_2020_V1"),
    2021: ("urn:eop:VITO:ESA_WorldCover_S2RGBNIR_10m_2021_V2", "urn:eop:VITO:ESA_WorldCover_10m_2021_V2"),
}
#: Default STAC collection ids: (S2 RGBNIR, WorldCover map).
DEFAULT_STAC_COLLECTIONS = ("esa-worldcover-s2rgbnir", "esa-worldcover")

#: What each kind of tile is called on disk and where it goes (the names ``aras-data prepare`` finds).
KINDS: dict[str, tuple[str, str]] = {"s2": ("s2", "_S2RGBNIR.tif"), "worldcover": ("worldcover", "_Map.tif")}

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 1 << 13  # small, so a dropped connection loses little of what arrived
_MULTIHASH = {"1220": "sha256", "d50110": "md5"}


@dataclass(frozen=True)
class DownloadItem:
    """One file to fetch.

    Attributes:
        url: HTTP(S) address of the file.
        path: Destination relative to the output folder (``s2/NAME_S2RGBNIR.tif``).
        size: Size in bytes, when the catalogue gives it.
        checksum: ``"ALGO:HEX"`` (``md5``, ``sha256``), when the catalogue gives one.
    """

    url: str
    path: str
    size: int | None = None
    checksum: str | None = None


@dataclass
class DownloadPlan:
    """The files covering a box (``items``), built by a source, and how to fetch them.

    Attributes:
        headers: Extra request headers (e.g. a bearer token), sent only to ``header_hosts``.
        header_hosts: Hosts (``netloc``) that receive ``headers``.
        auth: A ``requests`` auth object for every request (the catalogue's login), or ``None``.
    """

    items: list[DownloadItem]
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    header_hosts: frozenset[str] = frozenset()
    auth: Any = field(default=None, repr=False)

    @property
    def total_size(self) -> int:
        """Summed size of the files whose size is known."""
        return sum(item.size or 0 for item in self.items)

    def describe(self, out: str | Path | None = None) -> str:
        """One line per file (size, destination, URL) and a total line."""
        lines = [f"{_human(item.size):>10}  {item.path}  <- {item.url}" for item in self.items]
        unknown = sum(item.size is None for item in self.items)
        note = f" ({unknown} of unknown size)" if unknown else ""
        where = f" -> {out}" if out is not None else ""
        lines.append(f"{len(self.items)} files, {_human(self.total_size)}{note}{where}")
        return "\n".join(lines)


@dataclass
class DownloadReport:
    """What :func:`download` did.

    Attributes:
        out: Output folder.
        fetched: Files fetched (or finished from a ``.part`` file) in this run.
        skipped: Files already complete.
        bytes: Bytes transferred in this run.
    """

    out: Path
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes: int = 0

    def summary(self) -> str:
        """Counts and the ``aras-data prepare`` command that reads the folder."""
        return (
            f"downloaded {len(self.fetched)} files ({_human(self.bytes)}), {len(self.skipped)} already complete, "
            f"in {self.out}\nnext: aras-data prepare --s2 {self.out / 's2'} --worldcover {self.out / 'worldcover'} "
            "--out DIR"
        )


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _check_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    if len(bbox) != 4:
        raise ValueError(f"bbox needs four numbers W S E N, got {len(bbox)}")
    west, south, east, north = (float(v) for v in bbox)
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ValueError(f"bbox {west} {south} {east} {north} is not W S E N in degrees with W < E and S < N")
    return west, south, east, north


def safe_name(name: str, suffix: str) -> str:
    """A catalogue ``name`` (item id, URL's last part) made a file name that stays in its folder.

    Unsafe characters become ``_``, and ``suffix`` (e.g. ``_Map.tif``) is added if missing.

    Raises:
        ValueError: If nothing usable is left (``..``, an empty name).
    """
    clean = _SAFE.sub("_", name).strip("._")
    if not clean:
        raise ValueError(f"catalogue name {name!r} gives no safe file name")
    return clean if clean.endswith(suffix) else f"{clean.removesuffix('.tif')}{suffix}"


def _url_name(url: str) -> str:
    return posixpath.basename(unquote(urlsplit(url).path))


def _item(kind: str, item_id: str, url: str, size: int | None, checksum: str | None) -> DownloadItem:
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{url}: only http(s) asset addresses can be downloaded")
    folder, suffix = KINDS[kind]
    base = _url_name(url)
    name = safe_name(base if base.endswith(suffix) else item_id, suffix)
    return DownloadItem(url=url, path=f"{folder}/{name}", size=size, checksum=checksum)


def _unique(items: list[DownloadItem]) -> list[DownloadItem]:
    seen: dict[str, str] = {}
    for item in items:
        if item.path in seen and seen[item.path] != item.url:
            raise ValueError(f"two catalogue files would both be written to {item.path}: {seen[item.path]}, {item.url}")
        seen[item.path] = item.url
    return list({item.path: item for item in items}.values())


def _stac_checksum(extra: Mapping[str, Any]) -> str | None:
    value = extra.get("file:checksum")
    if not isinstance(value, str):
        return None
    for prefix, algo in _MULTIHASH.items():
        if value.startswith(prefix):
            return f"{algo}:{value[len(prefix) :].lower()}"
    return None


def _pick_asset(item: Any, key: str | None, suffix: str) -> Any:
    assets = item.assets
    if key is not None:
        if key not in assets:
            raise ValueError(f"STAC item {item.id} has no asset {key!r} (it has: {', '.join(sorted(assets))})")
        return assets[key]
    for asset in assets.values():
        if _url_name(asset.href).endswith(suffix):
            return asset
    raise ValueError(f"STAC item {item.id} has no asset ending in {suffix}; name the asset key")


def stac_plan(
    url: str,
    bbox: Sequence[float],
    year: int,
    collections: tuple[str, str] = DEFAULT_STAC_COLLECTIONS,
    assets: tuple[str | None, str | None] = (None, None),
    timeout: float = 60.0,
    token_env: str = STAC_TOKEN_ENV,
) -> DownloadPlan:
    """Plan the download of the tiles a STAC API has covering a box in a year.

    Args:
        url: STAC API landing page.
        bbox: ``(west, south, east, north)`` in degrees.
        year: Year of the composites and maps.
        collections: Collection ids of the S2 RGBNIR composites and the WorldCover maps.
        assets: Their asset keys (``None``: the asset ending in ``_S2RGBNIR.tif`` / ``_Map.tif``).
        timeout: Seconds to wait for each answer.
        token_env: Environment variable with an optional bearer token.

    Raises:
        ImportError: Without ``pystac-client``.
        ValueError: For no coverage, refused credentials or an unusable answer.
        OSError: For a server that does not answer.
    """
    try:
        import requests
        from pystac_client import Client
        from pystac_client.exceptions import APIError
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the stac source needs pystac-client: pip install 'aras400k[download]'") from err
    box = _check_bbox(bbox)
    token = os.environ.get(token_env)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    items: list[DownloadItem] = []
    try:
        client = Client.open(url, headers=headers, timeout=timeout)
        dates = f"{year}-01-01/{year}-12-31"
        for kind, collection, key in zip(KINDS, collections, assets, strict=True):
            found = list(client.search(collections=[collection], bbox=box, datetime=dates).items())
            if not found:
                raise ValueError(_no_coverage(collection, box, year))
            for stac_item in found:
                asset = _pick_asset(stac_item, key, KINDS[kind][1])
                size = asset.extra_fields.get("file:size")
                size = size if isinstance(size, int) else None
                href = asset.get_absolute_href() or asset.href
                items.append(_item(kind, stac_item.id, href, size, _stac_checksum(asset.extra_fields)))
    except APIError as err:
        status = getattr(err, "status_code", None)
        if status in (401, 403):
            raise ValueError(_refused(url, status, [token_env])) from None
        if status is None:
            raise OSError(f"{url}: the STAC API did not answer (connection refused, lost or timed out)") from None
        raise OSError(f"{url}: STAC API error {status}: {_first_line(err)}") from None
    except (requests.ConnectionError, requests.Timeout) as err:
        raise OSError(f"{url}: STAC API did not answer ({type(err).__name__})") from None
    return DownloadPlan(_unique(items), headers=headers, header_hosts=frozenset({urlsplit(url).netloc}))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _no_coverage(collection: str, box: Sequence[float], year: int) -> str:
    return f"no tiles of collection {collection} cover bbox {' '.join(f'{v:g}' for v in box)} in {year}"


def _refused(where: str, status: Any, env: Sequence[str]) -> str:
    return f"{where} refused the credentials ({status}): check the environment variable(s) {', '.join(env)}"


def terrascope_plan(
    bbox: Sequence[float],
    year: int,
    collections: tuple[str, str] | None = None,
    catalogue: Any = None,
) -> DownloadPlan:
    """Search the Terrascope catalogue for a ``bbox`` (``W S E N`` degrees) in a year, as the published downloader.

    Years other than 2020 and 2021 need the ``collections`` (S2 RGBNIR, WorldCover);
    ``catalogue`` defaults to a new ``terracatalogueclient.Catalogue`` (tests pass a fake).
    The credentials (see the module docstring) go only to the catalogue client, and the
    plan's ``auth`` is its login, used for the downloads.

    Raises:
        ImportError: Without ``terracatalogueclient``.
        ValueError: For missing or refused credentials, an unknown year or no coverage.
    """
    box = _check_bbox(bbox)
    if collections is None:
        if year not in DEFAULT_TERRASCOPE_COLLECTIONS:
            raise ValueError(f"no default Terrascope collections for {year} (known: 2020, 2021); name them")
        collections = DEFAULT_TERRASCOPE_COLLECTIONS[year]
    user, password = os.environ.get(TERRASCOPE_USER_ENV), os.environ.get(TERRASCOPE_PASSWORD_ENV)
    if not user or not password:
        raise ValueError(f"the terrascope source needs {TERRASCOPE_USER_ENV} and {TERRASCOPE_PASSWORD_ENV} set")
    if catalogue is None:
        try:
            from terracatalogueclient import Catalogue
        except ImportError as err:
            raise ImportError(
                "the terrascope source needs terracatalogueclient: pip install terracatalogueclient"
            ) from err
        catalogue = Catalogue()
    envs = [TERRASCOPE_USER_ENV, TERRASCOPE_PASSWORD_ENV]
    items: list[DownloadItem] = []
    try:
        catalogue = catalogue.authenticate_non_interactive(user, password) or catalogue
        for kind, collection in zip(KINDS, collections, strict=True):
            wanted = KINDS[kind][1]
            dates = {"start": f"{year}-01-01", "end": f"{year}-12-31"}
            products = list(catalogue.get_products(collection, **dates, bbox=list(box)))
            files = [(p.id, f) for p in products for f in p.data if _url_name(f.href).endswith(wanted)]
            if not products:
                raise ValueError(_no_coverage(collection, box, year))
            if not files:
                raise ValueError(f"{len(products)} products of {collection} cover the box but none has a *{wanted}")
            items.extend(_item(kind, pid, f.href, f.length, None) for pid, f in files)
    except ValueError:
        raise
    except Exception as err:
        if _is_auth_error(err):
            raise ValueError(_refused("the Terrascope catalogue", _status(err), envs)) from None
        raise OSError(f"the Terrascope catalogue failed: {_redact(_first_line(err), (user, password))}") from None
    return DownloadPlan(_unique(items), auth=getattr(catalogue, "_auth", None))


def _status(err: BaseException) -> Any:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None) or type(err).__name__


def _is_auth_error(err: BaseException) -> bool:
    if _status(err) in (401, 403):
        return True
    name = type(err).__name__.lower()
    return any(word in name for word in ("grant", "auth", "token", "credential"))


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _target(out: Path, relative: str) -> Path:
    """``out / relative``, refused unless it stays inside ``out``."""
    rel = Path(relative)
    path = (out / rel).resolve()
    if rel.is_absolute() or ".." in rel.parts or not path.is_relative_to(out.resolve()):
        raise ValueError(f"refusing to write {relative!r} outside {out}")
    return path


def _verify(path: Path, item: DownloadItem) -> str | None:
    """Why ``path`` is not the file ``item`` describes, or ``None`` when it is."""
    size = path.stat().st_size
    if item.size is not None and size != item.size:
        return f"size {size} instead of {item.size}"
    if item.checksum:
        algo, _, expected = item.checksum.partition(":")
        digest = hashlib.new(algo)
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected.lower():
            return f"{algo} checksum mismatch"
    return None


class _Fetcher:
    """Fetches one plan's files with one ``requests`` session per thread."""

    def __init__(self, plan: DownloadPlan, timeout: float, retries: int, progress: Callable[[int], object]) -> None:
        import requests

        self.requests = requests
        self.plan = plan
        self.timeout = timeout
        self.retries = retries
        self.progress = progress
        self.local = threading.local()
        self.lock = threading.Lock()
        self.transferred = 0

    def session(self) -> Any:
        if not hasattr(self.local, "session"):
            self.local.session = self.requests.Session()
            self.local.session.auth = self.plan.auth
        return self.local.session

    def fetch(self, item: DownloadItem, path: Path) -> None:
        """Fetch into ``path.part`` (continuing it), verify, rename; retry a dropped connection."""
        part = path.with_name(path.name + ".part")
        for attempt in range(self.retries + 1):
            try:
                self._get(item, part)
                break
            except (self.requests.ConnectionError, self.requests.exceptions.ChunkedEncodingError) as err:
                if attempt == self.retries:
                    raise OSError(
                        f"{item.url}: connection lost ({type(err).__name__}); rerun to resume from {part.name}"
                    ) from None
            except self.requests.Timeout:
                raise OSError(
                    f"{item.url}: no answer within {self.timeout:g} s (the server stopped answering); rerun to resume"
                ) from None
        problem = _verify(part, item)
        if problem:
            part.unlink()
            raise OSError(f"{item.url}: downloaded file failed verification ({problem}); rerun to fetch it again")
        part.replace(path)

    def _get(self, item: DownloadItem, part: Path) -> None:
        have = part.stat().st_size if part.exists() else 0
        if item.size is not None and have > item.size:
            part.unlink()
            have = 0
        headers = dict(self.plan.headers) if urlsplit(item.url).netloc in self.plan.header_hosts else {}
        if have:
            headers["Range"] = f"bytes={have}-"
        with self.session().get(item.url, headers=headers, stream=True, timeout=self.timeout) as response:
            if response.status_code in (401, 403):
                raise ValueError(f"{item.url}: access refused ({response.status_code}); check the credentials")
            if response.status_code == 416 and item.size is not None and have == item.size:
                return  # the .part file is already whole
            response.raise_for_status()
            content_range = response.headers.get("Content-Range", "")
            resumed = response.status_code == 206 and content_range.startswith(f"bytes {have}-")
            written = have if resumed else 0
            if resumed:
                self.progress(have)  # the bar counts the whole file; the report only what travelled
            length = response.headers.get("Content-Length")
            expected = written + int(length) if length and length.isdigit() else None
            with part.open("ab" if resumed else "wb") as f:
                for chunk in response.iter_content(_CHUNK):
                    f.write(chunk)
                    written += len(chunk)
                    self._count(len(chunk))
            if expected is not None and written < expected:
                raise self.requests.exceptions.ChunkedEncodingError(f"got {written} of {expected} bytes")

    def _count(self, n: int) -> None:
        with self.lock:
            self.transferred += n
            self.progress(n)


def download(
    plan: DownloadPlan,
    out: str | Path,
    workers: int = 4,
    timeout: float = 60.0,
    retries: int = 2,
    progress: bool = True,
) -> DownloadReport:
    """Fetch a plan into ``out``, in parallel, resuming partial files; returns what was done.

    Args:
        plan: Files to fetch.
        out: Output folder (``out/s2``, ``out/worldcover`` are created).
        workers: Parallel downloads.
        timeout: Seconds to wait for a connection or the next bytes.
        retries: Extra tries of a dropped file (each continues its ``.part`` file).
        progress: Show a progress bar in bytes.

    Raises:
        ValueError: For a destination outside ``out`` or refused access.
        OSError: For a server that stops answering or a file that fails verification.
    """
    from tqdm.auto import tqdm

    check_at_least("workers", workers, 1)
    root = Path(out)
    report = DownloadReport(out=root)
    todo: list[tuple[DownloadItem, Path]] = []
    for item in plan.items:
        path = _target(root, item.path)
        if path.exists() and _verify(path, item) is None:
            report.skipped.append(item.path)
        else:
            todo.append((item, path))
    known = sum(item.size or 0 for item, _ in todo)
    bar = tqdm(total=known or None, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress, desc="download")
    with bar:
        fetcher = _Fetcher(plan, timeout, retries, bar.update)
        for _, path in todo:
            path.parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(fetcher.fetch, item, path) for item, path in todo]
            errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    report.fetched = [item.path for (item, _), e in zip(todo, errors, strict=True) if e is None]
    report.bytes = fetcher.transferred
    if first is not None:
        raise first
    return report
