"""Safe loading of official NVlabs network pickles, against pickles built here.

The official files pickle every network through
``torch_utils.persistence._reconstruct_persistent_obj(meta)``. The tests write a
stand-in ``torch_utils.persistence`` (and ``dnnlib.util.EasyDict``) into a temporary
directory that is on ``sys.path`` only while a pickle is *written*, pickle our tiny
networks in that layout, remove the stand-ins again and load the file.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from aras400k.models.stylegan3 import build_discriminator
from aras400k.models.stylegan3.official import (
    PersistentObject,
    UnsafePickleError,
    export_official_state_dict,
    load_official,
    restricted_load,
)

from .tiny import Z_DIM, tiny_generator

# Our class names that differ from the official ones (the official StyleGAN2 file
# calls its synthesis classes SynthesisNetwork / SynthesisLayer too).
OFFICIAL_CLASS = {"StyleGAN2SynthesisNetwork": "SynthesisNetwork", "StyleGAN2SynthesisLayer": "SynthesisLayer"}
STAND_IN_MODULES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")


@pytest.fixture
def marker(tmp_path):
    """A file that exists only if code from a pickle ran."""
    return tmp_path / "code-ran.txt"


@contextlib.contextmanager
def stand_in_modules(directory):
    """Make ``torch_utils.persistence`` and ``dnnlib.util`` importable, only inside the block."""
    (directory / "torch_utils").mkdir(exist_ok=True)
    (directory / "torch_utils" / "__init__.py").write_text("")
    (directory / "torch_utils" / "persistence.py").write_text(
        textwrap.dedent(
            """
            def _reconstruct_persistent_obj(meta):
                raise RuntimeError("the stand-in persistence module must not be called when loading")
            """
        )
    )
    (directory / "dnnlib").mkdir(exist_ok=True)
    (directory / "dnnlib" / "__init__.py").write_text("from .util import EasyDict\n")
    (directory / "dnnlib" / "util.py").write_text("class EasyDict(dict):\n    pass\n")
    sys.path.insert(0, str(directory))
    try:
        import dnnlib.util
        import torch_utils.persistence

        yield torch_utils.persistence._reconstruct_persistent_obj, dnnlib.util.EasyDict
    finally:
        sys.path.remove(str(directory))
        for name in STAND_IN_MODULES:
            sys.modules.pop(name, None)


class Persistent:
    """Pickles like an object of NVlabs' persistence layer."""

    def __init__(self, reconstruct, meta):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def record(module, reconstruct, module_src, init_kwargs=None):
    """The persistent stand-in of ``module`` and (recursively) its submodules."""
    state = {
        "training": module.training,
        "_parameters": collections.OrderedDict(module._parameters),
        "_buffers": collections.OrderedDict(module._buffers),
        "_modules": collections.OrderedDict(
            (name, None if child is None else record(child, reconstruct, module_src))
            for name, child in module._modules.items()
        ),
        "_init_args": (),
        "_init_kwargs": init_kwargs or {},
        # Plain attributes as numpy scalars / arrays, as the official layers store them.
        "sampling_rate": np.float64(16.0),
        "num_channels": np.int64(3),
        "freqs_np": np.arange(4, dtype=np.float32).reshape(2, 2),
    }
    class_name = OFFICIAL_CLASS.get(type(module).__name__, type(module).__name__)
    meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name, "state": state}
    return Persistent(reconstruct, meta)


def official_kwargs(module, easy_dict):
    """``init_kwargs`` as the official code stores them: no ``architecture`` for G, EasyDicts inside."""
    kwargs = {k: easy_dict(v) if isinstance(v, dict) else v for k, v in module.init_kwargs.items()}
    if "z_dim" in kwargs:
        kwargs.pop("architecture")
    return kwargs


def write_snapshot(path, networks, marker, mutate=None):
    """Pickle ``networks`` ({key: module}) as an official snapshot; ``mutate(data)`` may edit it."""
    module_src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nraise RuntimeError('ran')\n"
    with stand_in_modules(path.parent) as (reconstruct, easy_dict):
        data = {key: None for key in ("G", "D", "G_ema")}
        for key, module in networks.items():
            data[key] = record(module, reconstruct, module_src, official_kwargs(module, easy_dict))
        data["augment_pipe"] = record(torch.nn.Identity(), reconstruct, module_src)
        data["training_set_kwargs"] = easy_dict(path="/data/patches.zip", resolution=np.int64(16), xflip=True)
        if mutate is not None:
            mutate(data)
        path.write_bytes(pickle.dumps(data))
    assert not any(name in sys.modules for name in STAND_IN_MODULES)
    return path


@pytest.mark.parametrize("cfg", ["stylegan3-t", "stylegan2"])
def test_official_generators_load_with_the_same_outputs(tmp_path, marker, cfg):
    generator, generator_ema = tiny_generator(cfg, seed=0), tiny_generator(cfg, seed=1)
    path = write_snapshot(tmp_path / "snapshot.pkl", {"G": generator, "G_ema": generator_ema}, marker)

    loaded = load_official(path, which=("G", "G_ema"))

    assert loaded.D is None
    assert loaded.G.architecture == generator.architecture
    assert "architecture" not in loaded.init_kwargs["G"]
    z = torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for ours, original in [(loaded.G, generator), (loaded.G_ema, generator_ema)]:
            assert torch.equal(ours(z, noise_mode="const"), original(z, noise_mode="const"))
    assert loaded.training_set_kwargs == {"path": "/data/patches.zip", "resolution": 16, "xflip": True}
    assert type(loaded.training_set_kwargs["resolution"]) is int
    assert any("augment_pipe" in note for note in loaded.notes)
    assert not marker.exists()


def test_official_discriminator_loads_with_the_same_scores(tmp_path, marker):
    torch.manual_seed(0)
    discriminator = build_discriminator(resolution=16, channel_base=256, channel_max=64).eval()
    path = write_snapshot(tmp_path / "snapshot.pkl", {"D": discriminator}, marker)

    loaded = load_official(path, which=("D",))

    image = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(loaded.D(image), discriminator(image))
    assert loaded.G is None and loaded.G_ema is None
    assert not marker.exists()


def test_records_keep_module_src_as_inert_text(tmp_path, marker):
    path = write_snapshot(tmp_path / "snapshot.pkl", {"G_ema": tiny_generator("stylegan3-t")}, marker)
    with open(path, "rb") as file:
        data = restricted_load(file)
    record_ = data["G_ema"]
    assert isinstance(record_, PersistentObject)
    assert record_.class_name == "Generator" and "write_text" in record_.module_src
    assert isinstance(record_.state["sampling_rate"], np.float64)
    np.testing.assert_array_equal(record_.state["freqs_np"], np.arange(4, dtype=np.float32).reshape(2, 2))
    assert not marker.exists()


class Evil:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    ("make", "global_name"),
    [
        (lambda m: Evil(os.system, f"touch {m}"), f"{os.system.__module__}.system"),
        (lambda m: Evil(builtins.eval, f"open({str(m)!r}, 'w').write('ran')"), "builtins.eval"),
        (lambda m: Evil(subprocess.Popen, ["touch", str(m)]), "subprocess.Popen"),
    ],
    ids=["os.system", "builtins.eval", "subprocess.Popen"],
)
def test_malicious_reduce_is_refused_without_running(tmp_path, marker, make, global_name):
    top_level = tmp_path / "top.pkl"
    top_level.write_bytes(pickle.dumps({"G_ema": make(marker)}))

    def hide_in_buffers(data):
        data["G_ema"].meta["state"]["_buffers"]["evil"] = make(marker)

    nested = write_snapshot(tmp_path / "nested.pkl", {"G_ema": tiny_generator("stylegan2")}, marker, hide_in_buffers)

    for path in (top_level, nested):
        with pytest.raises(UnsafePickleError, match=global_name.replace(".", r"\.")):
            load_official(path)
    assert not marker.exists()


def test_control_plain_pickle_would_run_the_payload(marker):
    # Shows that the payloads above are live: an unrestricted unpickler runs them.
    pickle.loads(pickle.dumps(Evil(builtins.eval, f"open({str(marker)!r}, 'w').write('ran')")))
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_storage_blob_is_loaded_weights_only(tmp_path, marker):
    blob = pickle.dumps(Evil(os.system, f"touch {marker}"))
    path = tmp_path / "blob.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Evil(torch.storage._load_from_bytes, blob)}))
    with pytest.raises(UnsafePickleError, match="storage blob"):
        load_official(path)
    assert not marker.exists()


def test_persistent_ids_are_refused(tmp_path):
    class IdPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "payload" if obj == "x" else None

    path = tmp_path / "pid.pkl"
    with open(path, "wb") as file:
        IdPickler(file).dump({"G_ema": "x"})
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_official(path)


def rename_generator(data):
    data["G_ema"].meta["class_name"] = "EvilNetwork"


def add_unknown_kwarg(data):
    data["G_ema"].meta["state"]["_init_kwargs"]["warp_factor"] = 9


def drop_a_parameter(data):
    data["G_ema"].meta["state"]["_modules"]["mapping"].meta["state"]["_modules"]["fc0"].meta["state"][
        "_parameters"
    ].pop("bias")


def reshape_a_buffer(data):
    data["G_ema"].meta["state"]["_modules"]["mapping"].meta["state"]["_buffers"]["w_avg"] = torch.zeros(5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (rename_generator, "unknown official class 'EvilNetwork'"),
        (add_unknown_kwarg, "does not support: warp_factor"),
        (drop_a_parameter, r"missing from the file: mapping\.fc0\.bias"),
        (reshape_a_buffer, r"mapping\.w_avg \(5,\) vs ours \(32,\)"),
    ],
    ids=["unknown-class", "unknown-kwarg", "missing-tensor", "shape-mismatch"],
)
def test_bad_records_are_refused_clearly(tmp_path, marker, mutate, message):
    path = write_snapshot(tmp_path / "snapshot.pkl", {"G_ema": tiny_generator("stylegan2")}, marker, mutate)
    with pytest.raises(ValueError, match=message):
        load_official(path)
    assert not marker.exists()


def test_missing_file_and_unknown_network(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_official(tmp_path / "absent.pkl")
    with pytest.raises(ValueError, match="unknown network"):
        load_official(tmp_path / "absent.pkl", which=("generator",))


def test_export_round_trip_matches_the_official_names(tmp_path, marker):
    generator = tiny_generator("stylegan3-t", seed=5)
    exported = export_official_state_dict(generator)

    fresh = tiny_generator("stylegan3-t", seed=6)
    fresh.load_state_dict(exported, strict=True)
    z = torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(fresh(z), generator(z))

    # Inverse check: the exported names are exactly those an official pickle stores.
    path = write_snapshot(tmp_path / "snapshot.pkl", {"G_ema": generator}, marker)
    with open(path, "rb") as file:
        stored = restricted_load(file)["G_ema"]

    def names(rec, prefix=""):
        state = rec.state
        own = [prefix + n for slot in ("_parameters", "_buffers") for n, t in state[slot].items() if t is not None]
        return own + [n for k, child in state["_modules"].items() for n in names(child, f"{prefix}{k}.")]

    assert sorted(names(stored)) == sorted(exported)
    assert all(not t.requires_grad for t in exported.values())
