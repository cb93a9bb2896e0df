"""Load NVlabs' official StyleGAN3 / StyleGAN2-ADA network pickles safely, and export to them.

An official ``network-snapshot-*.pkl`` is a plain pickle of a dict with ``G``, ``D``,
``G_ema``, ``augment_pipe`` and ``training_set_kwargs``. Every network in it is
stored through NVlabs' ``torch_utils.persistence``: the pickle calls the global
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with a meta dict
``{type, version, module_src, class_name, state}``, and the official loader then
*imports and executes* ``module_src`` (the Python source of the defining module) to
rebuild the object. Loading such a file with :func:`pickle.load` therefore runs
arbitrary code taken from the file.

This module never does that. :class:`RestrictedUnpickler` resolves only the globals of
:data:`ALLOWED_GLOBALS`: the persistence call is recorded as an inert
:class:`PersistentObject` (``module_src`` is never imported, compiled or executed),
tensors are rebuilt by torch's own functions, storages through ``torch.load(...,
weights_only=True)``, and any other global is refused with :class:`UnsafePickleError`
*before* it is imported or called. :func:`load_official` then builds our networks from
the stored ``init_kwargs`` and copies the stored tensors by their (official) names.

:func:`export_official_state_dict` goes the other way: our module's weights under the
official names, ready for a ``load_state_dict`` on an official network.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import io
import os
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor, nn

from aras400k.models.stylegan3.discriminator import Discriminator, DiscriminatorBlock, DiscriminatorEpilogue
from aras400k.models.stylegan3.generator import Generator
from aras400k.models.stylegan3.mapping import MappingNetwork
from aras400k.models.stylegan3.stylegan2 import StyleGAN2SynthesisNetwork
from aras400k.models.stylegan3.synthesis import SynthesisNetwork

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct  # type: ignore[no-redef]
    from numpy.core.multiarray import scalar as _np_scalar  # type: ignore[no-redef]

__all__ = [
    "ALLOWED_GLOBALS",
    "NETWORK_KEYS",
    "OfficialNetworks",
    "PersistentObject",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "export_official_state_dict",
    "load_official",
    "restricted_load",
]

#: The networks of an official snapshot that :func:`load_official` can build.
NETWORK_KEYS: tuple[str, ...] = ("G", "D", "G_ema")

# Which official class each snapshot key must hold.
_EXPECTED_CLASS = {"G": "Generator", "G_ema": "Generator", "D": "Discriminator"}

# Official positional-argument order of the two networks (``init_args`` is empty in
# the files the official training writes, but the persistence layer records it); our
# Discriminator's parameters are the official ones, in the official order.
_GENERATOR_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
_DISCRIMINATOR_POSITIONAL = tuple(inspect.signature(Discriminator).parameters)


class UnsafePickleError(ValueError):
    """A pickle asked for something the restricted unpickler does not allow (raised before it is imported or called)."""


@dataclasses.dataclass
class PersistentObject:
    """Inert record of one ``_reconstruct_persistent_obj(meta)`` call of an official pickle.

    Attributes:
        class_name: Name of the official class (``"Generator"``, ``"SynthesisLayer"``, ...).
        version: Version of NVlabs' persistence format.
        state: The object's ``__dict__`` (``_modules``, ``_parameters``, ``_buffers``,
            ``_init_kwargs``, ...), unpickled: submodules are :class:`PersistentObject` too.
        module_src: The defining module's source, an inert string (never imported or run).
    """

    class_name: str
    version: Any
    state: dict[str, Any]
    module_src: str = dataclasses.field(repr=False, default="")


@dataclasses.dataclass
class OfficialNetworks:
    """The networks of an official snapshot, rebuilt as our modules.

    Attributes:
        G: The generator being trained, or ``None`` if not requested / absent.
        D: The discriminator, or ``None``.
        G_ema: The moving-average generator (the one to sample from), or ``None``.
        training_set_kwargs: The stored dataset arguments as plain Python, or ``None``.
        init_kwargs: The official constructor arguments of each loaded network.
        notes: What was skipped or adapted (e.g. the augmentation pipeline).
    """

    G: Generator | None = None
    D: Discriminator | None = None
    G_ema: Generator | None = None
    training_set_kwargs: dict[str, Any] | None = None
    init_kwargs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


# Safe stand-ins for the allowed globals: each raises UnsafePickleError for arguments
# of the wrong types or layout.


def _record_persistent_obj(meta: Any) -> PersistentObject:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: record the meta dict, never run."""
    if not isinstance(meta, dict):
        raise UnsafePickleError(f"persistent object meta must be a dict, got {type(meta).__name__}")
    if meta.get("type") != "class":
        raise UnsafePickleError(f"unsupported persistent object type {meta.get('type')!r} (expected 'class')")
    class_name, state, module_src = meta.get("class_name"), meta.get("state"), meta.get("module_src", "")
    if not isinstance(class_name, str) or not class_name.isidentifier():
        raise UnsafePickleError(f"persistent object class_name must be an identifier, got {class_name!r}")
    if not isinstance(state, dict):
        raise UnsafePickleError(f"state of persistent {class_name} must be a dict, got {type(state).__name__}")
    if not isinstance(module_src, str):
        raise UnsafePickleError(f"module_src of persistent {class_name} must be a string")
    return PersistentObject(class_name=class_name, version=meta.get("version"), state=state, module_src=module_src)


class _EasyDict(dict):  # type: ignore[type-arg]
    """Inert stand-in for ``dnnlib.util.EasyDict``: a plain dict, no attribute access magic."""


def _check_hooks(backward_hooks: Any) -> None:
    if backward_hooks is not None and (not isinstance(backward_hooks, dict) or backward_hooks):
        raise UnsafePickleError("refusing a tensor that carries backward hooks")


def _safe_rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    metadata: Any = None,
) -> Tensor:
    """Type-checked ``torch._utils._rebuild_tensor_v2`` (a view on an already loaded storage)."""
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"tensor storage must be a torch storage, got {type(storage).__name__}")
    ints = (storage_offset, *tuple(size), *tuple(stride))
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ints):
        raise UnsafePickleError("tensor offset, size and stride must be integers")
    if not isinstance(requires_grad, bool):
        raise UnsafePickleError("tensor requires_grad must be a bool")
    _check_hooks(backward_hooks)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, bool) for v in metadata.values())
    ):
        raise UnsafePickleError("tensor metadata must be a dict of flags")
    return torch._utils._rebuild_tensor_v2(
        storage, storage_offset, tuple(size), tuple(stride), requires_grad, collections.OrderedDict(), metadata
    )


def _safe_rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> nn.Parameter:
    """Type-checked ``torch._utils._rebuild_parameter`` (wraps a tensor as a parameter)."""
    if not isinstance(data, Tensor) or not isinstance(requires_grad, bool):
        raise UnsafePickleError("a parameter must be rebuilt from a tensor and a bool")
    _check_hooks(backward_hooks)
    return torch._utils._rebuild_parameter(data, requires_grad, collections.OrderedDict())


def _safe_load_from_bytes(blob: Any) -> torch.storage.TypedStorage | torch.UntypedStorage:
    """Replacement for ``torch.storage._load_from_bytes``: ``torch.load`` with ``weights_only=True``.

    The official function unpickles the nested blob without restrictions; torch's
    weights-only unpickler only accepts tensors, storages and plain containers.
    """
    if not isinstance(blob, (bytes, bytearray)):
        raise UnsafePickleError(f"a storage must be loaded from bytes, got {type(blob).__name__}")
    try:
        storage = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise UnsafePickleError(f"refusing a tensor storage blob: {error}") from error
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"a storage blob must hold a storage, got {type(storage).__name__}")
    return storage


def _safe_numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Type-checked ``numpy.core.multiarray.scalar``: a numpy scalar (no object dtype) from its raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError("a numpy scalar must be rebuilt from a non-object dtype and bytes")
    return _np_scalar(dtype, data)


def _safe_numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """Type-checked ``numpy.core.multiarray._reconstruct``: an empty plain ``ndarray`` (no subtype).

    Its contents are then set by numpy's own ``ndarray.__setstate__``, copying bytes
    or, for object arrays, items that went through this unpickler too.
    """
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing to reconstruct a numpy array of type {subtype!r}")
    array: np.ndarray = _np_reconstruct(np.ndarray, shape, dtype)  # type: ignore[assignment]
    return array


#: ``(module, name)`` of every global an official pickle may name, and what it resolves to.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    # The persistence call: recorded, neither ``torch_utils`` nor ``module_src`` imported or run.
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _record_persistent_obj,
    # Containers of module state (``_modules``, hooks, ...) and ``dnnlib.EasyDict`` kwargs.
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    # Tensors: torch's own functions make a view of a loaded storage / wrap it as a parameter.
    ("torch._utils", "_rebuild_tensor_v2"): _safe_rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _safe_rebuild_parameter,
    # Storages are nested ``torch.save`` blobs: loaded with ``weights_only=True``.
    ("torch.storage", "_load_from_bytes"): _safe_load_from_bytes,
    # numpy scalars and arrays among the stored attributes: numpy's own constructors copy
    # raw bytes and execute nothing.
    ("numpy._core.multiarray", "scalar"): _safe_numpy_scalar,
    ("numpy.core.multiarray", "scalar"): _safe_numpy_scalar,
    ("numpy._core.multiarray", "_reconstruct"): _safe_numpy_reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _safe_numpy_reconstruct,
    # ``numpy.dtype`` parses a type string; ``numpy.ndarray`` is ``_reconstruct``'s subtype.
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and no persistent ids.

    Every ``GLOBAL`` / ``STACK_GLOBAL`` / extension-code opcode goes through
    :meth:`find_class`, so a ``__reduce__`` naming any other callable (``os.system``,
    ``builtins.eval``, ``subprocess.Popen``, ...) fails there, before the callable is
    imported or called.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global to its stand-in in :data:`ALLOWED_GLOBALS`.

        Raises:
            UnsafePickleError: For any other global (nothing is imported).
        """
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global '{module}.{name}' from the pickle: only the globals of an "
                "official StyleGAN network pickle are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse every persistent id (official network pickles use none) with :class:`UnsafePickleError`."""
        raise UnsafePickleError(f"refusing persistent id {pid!r}: official network pickles use none")


def restricted_load(file: BinaryIO) -> Any:
    """Unpickle ``file`` with :class:`RestrictedUnpickler`.

    Args:
        file: A binary file object positioned at the pickle.

    Returns:
        The unpickled object; persistent networks are :class:`PersistentObject`.

    Raises:
        UnsafePickleError: For any global or persistent id that is not allowed.
    """
    return RestrictedUnpickler(file).load()


def _plain(value: Any) -> Any:
    """Convert EasyDicts to dicts and numpy scalars to Python numbers, recursively."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _parameter_names(function: Callable[..., Any], exclude: Iterable[str] = ()) -> set[str]:
    """Named (non-variadic) parameters of ``function`` minus ``exclude``."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in inspect.signature(function).parameters.values() if p.kind in kinds}
    return names - {"self", *exclude}


def _check_kwargs(what: str, kwargs: Mapping[str, Any], allowed: set[str]) -> None:
    """Raise a ValueError naming the keys of ``kwargs`` not in ``allowed``."""
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"official {what} has init_kwargs that our implementation does not support: {', '.join(unknown)}"
        )


def _init_kwargs(record: PersistentObject, positional: Sequence[str]) -> dict[str, Any]:
    """The constructor arguments of a record: ``init_args`` bound by name, plus ``init_kwargs``."""
    state = record.state
    args = state.get("_init_args", state.get("init_args")) or ()
    kwargs = state.get("_init_kwargs", state.get("init_kwargs")) or {}
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise ValueError(f"official {record.class_name} has malformed init_args/init_kwargs")
    if len(args) > len(positional):
        raise ValueError(
            f"official {record.class_name} has {len(args)} positional init_args, at most {len(positional)}"
        )
    bound = dict(zip(positional, args, strict=False))
    clash = sorted(set(bound) & set(kwargs))
    if clash:
        raise ValueError(f"official {record.class_name} gives {', '.join(clash)} both positionally and by name")
    return _plain({**bound, **kwargs})


def _infer_architecture(record: PersistentObject, kwargs: Mapping[str, Any]) -> str:
    """``"stylegan3"`` or ``"stylegan2"`` from the stored submodules (or, failing that, the kwargs)."""
    synthesis = record.state.get("_modules", {}).get("synthesis")
    if isinstance(synthesis, PersistentObject):
        children = set(synthesis.state.get("_modules", {}))
        if "input" in children:  # networks_stylegan3.SynthesisInput
            return "stylegan3"
        if "b4" in children:  # networks_stylegan2.SynthesisBlock at 4x4
            return "stylegan2"
    if kwargs.get("architecture") in ("stylegan3", "stylegan2"):  # written by our own code
        return str(kwargs["architecture"])
    names = set(kwargs) | set(kwargs.get("synthesis_kwargs") or {})
    if names & {"magnitude_ema_beta", "use_radial_filters", "conv_kernel", "num_critical", "margin_size"}:
        return "stylegan3"
    if names & {"fused_modconv_default", "resample_filter"}:
        return "stylegan2"
    raise ValueError("cannot tell whether the official Generator is a StyleGAN3 or a StyleGAN2 generator")


def _build_generator(record: PersistentObject) -> tuple[Generator, dict[str, Any]]:
    """Build our :class:`Generator` from an official generator record."""
    kwargs = _init_kwargs(record, _GENERATOR_POSITIONAL)
    architecture = _infer_architecture(record, kwargs)
    official_kwargs = dict(kwargs)
    # ``architecture`` is ours (stylegan3/stylegan2); in an official StyleGAN2 generator
    # the same name is the synthesis architecture, where only the default 'skip' exists.
    stored = kwargs.pop("architecture", None)
    if stored not in (None, architecture, "skip") or (stored == "skip" and architecture != "stylegan2"):
        raise ValueError(f"unsupported official generator architecture {stored!r} (only 'skip' is implemented)")
    synthesis_class = SynthesisNetwork if architecture == "stylegan3" else StyleGAN2SynthesisNetwork
    synthesis_names = _parameter_names(synthesis_class, exclude=("w_dim", "img_resolution", "img_channels"))
    nested = kwargs.get("synthesis_kwargs") or {}
    _check_kwargs("Generator", kwargs, set(_GENERATOR_POSITIONAL) | synthesis_names | {"synthesis_kwargs"})
    _check_kwargs("Generator synthesis_kwargs", nested, synthesis_names)
    mapping_kwargs = kwargs.get("mapping_kwargs") or {}
    _check_kwargs(
        "Generator mapping_kwargs",
        mapping_kwargs,
        _parameter_names(MappingNetwork, exclude=("z_dim", "c_dim", "w_dim", "num_ws")),
    )
    missing = sorted({"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"} - set(kwargs))
    if missing:
        raise ValueError(f"official Generator lacks init_kwargs {', '.join(missing)}")
    return Generator(architecture=architecture, **kwargs), official_kwargs  # type: ignore[arg-type]


def _build_discriminator(record: PersistentObject) -> tuple[Discriminator, dict[str, Any]]:
    """Build our :class:`Discriminator` from an official discriminator record."""
    kwargs = _init_kwargs(record, _DISCRIMINATOR_POSITIONAL)
    _check_kwargs("Discriminator", kwargs, _parameter_names(Discriminator))
    # The arguments each part gets from the Discriminator itself.
    fixed = ("in_channels", "resolution", "img_channels", "architecture", "conv_clamp")
    parts: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
        "block_kwargs": (DiscriminatorBlock, (*fixed, "tmp_channels", "out_channels", "first_layer_idx")),
        "epilogue_kwargs": (DiscriminatorEpilogue, (*fixed, "cmap_dim")),
        "mapping_kwargs": (MappingNetwork, ("z_dim", "c_dim", "w_dim", "num_ws", "w_avg_beta")),
    }
    for key, (part, exclude) in parts.items():
        _check_kwargs(f"Discriminator {key}", kwargs.get(key) or {}, _parameter_names(part, exclude))
    missing = sorted({"c_dim", "img_resolution", "img_channels"} - set(kwargs))
    if missing:
        raise ValueError(f"official Discriminator lacks init_kwargs {', '.join(missing)}")
    return Discriminator(**kwargs), kwargs


_BUILDERS: dict[str, Callable[[PersistentObject], tuple[nn.Module, dict[str, Any]]]] = {
    "Generator": _build_generator,
    "Discriminator": _build_discriminator,
}


def _stored_tensors(record: PersistentObject, prefix: str = "") -> dict[str, Tensor]:
    """Flatten the ``_parameters`` / ``_buffers`` of a record tree to ``{dotted name: tensor}``."""
    tensors: dict[str, Tensor] = {}
    for slot in ("_parameters", "_buffers"):
        for name, value in (record.state.get(slot) or {}).items():
            if value is None:
                continue
            if not isinstance(value, Tensor):
                raise ValueError(f"official {slot[1:-1]} {prefix}{name} is a {type(value).__name__}, not a tensor")
            tensors[f"{prefix}{name}"] = value
    for name, child in (record.state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise ValueError(f"official submodule {prefix}{name} is a {type(child).__name__}, not a network record")
        tensors.update(_stored_tensors(child, f"{prefix}{name}."))
    return tensors


def _summarise(names: Iterable[str], limit: int = 12) -> str:
    names = sorted(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _load_stored(module: nn.Module, record: PersistentObject, what: str, strict: bool) -> None:
    """Copy the stored tensors of ``record`` into ``module`` by name, checking shapes (and names if ``strict``)."""
    stored = _stored_tensors(record)
    targets = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    expected = set(module.state_dict())
    missing, unexpected = expected - set(stored), set(stored) - set(targets)
    problems = []
    if strict and missing:
        problems.append(f"missing from the file: {_summarise(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected in the file: {_summarise(unexpected)}")
    shapes = [
        f"{name} {tuple(stored[name].shape)} vs ours {tuple(targets[name].shape)}"
        for name in sorted(set(stored) & set(targets))
        if stored[name].shape != targets[name].shape
    ]
    if shapes:
        problems.append(f"shape mismatches: {_summarise(shapes)}")
    if problems:
        raise ValueError(f"cannot load official {what}: " + "; ".join(problems))
    with torch.no_grad():
        for name in set(stored) & set(targets):
            targets[name].copy_(stored[name])


def load_official(
    path: str | os.PathLike[str],
    which: Sequence[str] = ("G_ema",),
    strict: bool = True,
) -> OfficialNetworks:
    """Load networks from an official NVlabs ``network-snapshot-*.pkl`` without running its code.

    The augmentation pipeline is skipped (noted in the result).

    Args:
        path: The pickle file.
        which: Networks to build, any of ``"G"``, ``"D"``, ``"G_ema"``.
        strict: Require the stored names to match ours exactly (shapes are always checked).

    Returns:
        The rebuilt networks (in eval mode, on CPU) and the raw training-set kwargs.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        UnsafePickleError: If the pickle names a global outside
            :data:`ALLOWED_GLOBALS` (nothing from it runs).
        ValueError: For an unknown network name in ``which``, a file without the
            requested network, an unknown class name, unsupported ``init_kwargs``, or
            missing / unexpected / mis-shaped tensors.
    """
    unknown = [key for key in which if key not in NETWORK_KEYS]
    if unknown:
        raise ValueError(f"unknown network(s) {', '.join(map(repr, unknown))}; choose from {', '.join(NETWORK_KEYS)}")
    with open(path, "rb") as file:
        data = restricted_load(file)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an official snapshot dict at the top level, got {type(data).__name__}")

    result = OfficialNetworks()
    tsk = data.get("training_set_kwargs")
    result.training_set_kwargs = _plain(tsk) if isinstance(tsk, dict) else None
    if data.get("augment_pipe") is not None:
        pipe = data["augment_pipe"]
        name = pipe.class_name if isinstance(pipe, PersistentObject) else type(pipe).__name__
        result.notes.append(f"augment_pipe ({name}) skipped: ADA is re-created by our training module")
    others = sorted(set(map(str, data)) - {*NETWORK_KEYS, "augment_pipe", "training_set_kwargs"})
    if others:
        result.notes.append(f"ignored top-level entries: {', '.join(others)}")

    for key in which:
        record = data.get(key)
        if record is None:
            raise ValueError(f"{path}: the snapshot has no {key!r} network")
        if not isinstance(record, PersistentObject):
            raise ValueError(f"{path}: {key!r} is a {type(record).__name__}, not an official network record")
        if record.class_name not in _BUILDERS:
            raise ValueError(
                f"{path}: {key!r} has unknown official class {record.class_name!r}; "
                f"known: {', '.join(sorted(_BUILDERS))}"
            )
        if record.class_name != _EXPECTED_CLASS[key]:
            raise ValueError(f"{path}: {key!r} holds a {record.class_name}, expected {_EXPECTED_CLASS[key]}")
        module, kwargs = _BUILDERS[record.class_name](record)
        _load_stored(module, record, f"{key} ({record.class_name})", strict=strict)
        module.eval()
        setattr(result, key, module)
        result.init_kwargs[key] = kwargs
    return result


def export_official_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """Our module's weights under the official NVlabs names.

    Our names are the official ones, so this is the ``state_dict`` without our own
    entries (``_extra_state``, non-tensors), detached and cloned on CPU, for
    ``load_state_dict`` on an official network (or on ours).

    Args:
        module: Our :class:`Generator` or :class:`Discriminator` (or a submodule).

    Returns:
        ``{official name: tensor}``.
    """
    return {
        name: value.detach().to("cpu", copy=True)
        for name, value in module.state_dict().items()
        if isinstance(value, Tensor) and not name.endswith("_extra_state")
    }
