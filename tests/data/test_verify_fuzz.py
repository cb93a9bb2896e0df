"""``verify`` reports every malformed manifest, meta or member and never raises (issue #12, item 5)."""

import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aras400k.cli.data import main
from aras400k.data.verify import VerifyReport, verify_shards
from tests.conftest import write_random_set

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DELETE = object()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
odd_names = st.sampled_from(
    ["../evil.image.png", "/abs/evil.meta.json", "..", ".meta.json", "k.", "noext", "a/b/s0000.mask.png", "s0000"]
) | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)


@pytest.fixture(scope="module")
def base_set(tmp_path_factory) -> Path:
    """Four 16 px samples in two shards, made once for the module."""
    return write_random_set(tmp_path_factory.mktemp("fuzz") / "set", 4, size=16, per_shard=2)


def _verify_copy(base: Path, mutate) -> VerifyReport:
    """Copy the set, apply ``mutate(root)``, verify it; the report must come back whatever the mutation."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(base, Path(tmp) / "set"))
        mutate(root)
        report = verify_shards(root, progress=False)
    assert isinstance(report, VerifyReport)
    report.summary()
    return report


def _edit_manifest(root: Path, edit) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def _rewrite_tar(shard: Path, edit) -> None:
    """Rewrite a tar with ``edit(name, data)`` -> ``(name, data)`` or ``None`` (drop) for each member."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            edited = edit(name, data)
            if edited is None:
                continue
            info = tarfile.TarInfo(edited[0])
            info.size = len(edited[1])
            tar.addfile(info, io.BytesIO(edited[1]))


def _set_path(manifest: dict, path: tuple, value) -> None:
    target = manifest
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("shards",), "train-000000.tar"),
        (("shards",), {"name": "train-000000.tar"}),
        (("shards", 0, "name"), DELETE),
        (("shards", 0), "train-000000.tar"),
        (("shards", 0, "num_samples"), "2"),
        (("shards", 0, "sha256"), 5),
        (("num_samples",), None),
        (("format_version",), "1"),
        (("class_pixels",), [1, 2]),
        (("class_pixels",), {"tree": "many"}),
        (("split",), ["train"]),
        (("image_size",), "16x16"),
    ],
)
def test_malformed_manifest_fields_are_problems(base_set, path, value):
    report = _verify_copy(base_set, lambda root: _edit_manifest(root, lambda m: _set_path(m, path, value)))
    assert not report.ok and report.problems[0][0].endswith("set")


@pytest.mark.parametrize("meta", [b"null", b'"a string"', b"[1, 2]", b"42", b"{", b"\xff\xfe", b'{"source": []}'])
def test_malformed_meta_is_a_problem(base_set, meta):
    edit = lambda name, data: (name, meta if name == "s0001.meta.json" else data)  # noqa: E731
    report = _verify_copy(base_set, lambda root: _rewrite_tar(root / "train-000000.tar", edit))
    assert "train-000000.tar:s0001" in dict(report.problems)


@pytest.mark.parametrize(
    "meta",
    [
        {"source": "real", "split": "train", "composition": [0.5]},
        {"source": "real", "split": 3, "composition": {}},
        {"source": "elsewhere", "split": "train", "composition": {}},
        {"source": "real", "split": "train", "composition": {"tree": "most"}},
    ],
)
def test_wrong_meta_field_types_are_problems(base_set, meta):
    data = json.dumps(meta).encode()
    edit = lambda name, old: (name, data if name == "s0001.meta.json" else old)  # noqa: E731
    report = _verify_copy(base_set, lambda root: _rewrite_tar(root / "train-000000.tar", edit))
    assert "train-000000.tar:s0001" in dict(report.problems)


def test_cli_exits_1_on_a_null_meta_and_a_string_shards(base_set, tmp_path, capsys):
    root = Path(shutil.copytree(base_set, tmp_path / "a"))
    _rewrite_tar(root / "train-000000.tar", lambda n, d: (n, b"null" if n == "s0000.meta.json" else d))
    other = Path(shutil.copytree(base_set, tmp_path / "b"))
    _edit_manifest(other, lambda m: m.update(shards="train-000000.tar"))
    assert main(["verify", str(root), str(other), "--quiet", "true"]) == 1
    out = capsys.readouterr().out
    assert "meta.json must hold an object" in out and "shards must be a list" in out


_manifest_paths = st.sampled_from(
    [
        ("shards",),
        ("num_samples",),
        ("num_masks",),
        ("split",),
        ("source",),
        ("format",),
        ("format_version",),
        ("class_pixels",),
        ("class_pixels", "tree"),
        ("image_size",),
        ("shards", 0),
        ("shards", 1, "name"),
        ("shards", 0, "num_samples"),
        ("shards", 1, "sha256"),
    ]
)


@FUZZ
@given(edits=st.lists(st.tuples(_manifest_paths, json_values | st.just(DELETE)), min_size=1, max_size=3))
def test_fuzzed_manifests_never_crash_verify(base_set, edits):
    def edit(manifest):
        for path, value in edits:
            try:
                _set_path(manifest, path, value)
            except (KeyError, IndexError, TypeError):
                pass  # an earlier edit removed or replaced the parent

    _verify_copy(base_set, lambda root: _edit_manifest(root, edit))


@FUZZ
@given(
    member=st.sampled_from(["image.png", "mask.png", "meta.json"]),
    key=st.sampled_from(["s0000", "s0003"]),
    content=st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.integers(0, 400).map(lambda n: ("truncate", n)),
    ),
)
def test_fuzzed_members_never_crash_verify(base_set, member, key, content):
    shard = "train-000000.tar" if key == "s0000" else "train-000001.tar"

    def edit(name, data):
        if name != f"{key}.{member}":
            return name, data
        return name, data[: content[1]] if isinstance(content, tuple) else content

    _verify_copy(base_set, lambda root: _rewrite_tar(root / shard, edit))


@FUZZ
@given(index=st.integers(0, 7), name=odd_names, drop=st.booleans())
def test_fuzzed_member_names_never_crash_verify(base_set, index, name, drop):
    def edit(old, data):
        position = order.index(old)
        if position != index:
            return old, data
        return None if drop else (name, data)

    def mutate(root):
        with tarfile.open(root / "train-000000.tar") as tar:
            order.extend(m.name for m in tar.getmembers())
        _rewrite_tar(root / "train-000000.tar", edit)

    order: list[str] = []
    _verify_copy(base_set, mutate)


@FUZZ
@given(offset=st.integers(0, 20_000), cut=st.booleans(), byte=st.integers(0, 255))
def test_fuzzed_tar_bytes_never_crash_verify(base_set, offset, cut, byte):
    def mutate(root):
        shard = root / "train-000001.tar"
        data = bytearray(shard.read_bytes())
        offset_in = offset % len(data)
        if cut:
            del data[offset_in:]
        else:
            data[offset_in] = byte
        shard.write_bytes(bytes(data))

    _verify_copy(base_set, mutate)
