"""Checkpoint reading that never runs code from a file, whoever calls it and wherever the file is.

A PyTorch checkpoint is a pickle, and a pickle can name any Python callable to run
while it loads. Every checkpoint aras400k or its Trainer reads (local, ``http(s)://``,
fsspec such as ``s3://``; a resumed run, a ``segmenter_ckpt``, encoder weights) goes
through :func:`load_checkpoint`, which unpickles tensors and plain values only
(``torch.load(weights_only=True)``, passed explicitly so no environment variable can
switch it off). A file that names anything else is refused with one line naming the
file and the global it asked for; nothing in it runs.

Three doors lead here: :func:`load_checkpoint` / :func:`read_checkpoint`;
:class:`SafeCheckpointIO`, the Trainer's plugin, which the CLI installs and every aras400k
LightningModule installs again in ``setup`` (which Lightning calls before it restores
``ckpt_path``, so a plain ``lightning.Trainer`` is covered too); and
:class:`SafeLoadingMixin`'s ``load_from_checkpoint`` (no torch hub cache, no
``weights_only=False`` for URLs).

Official NVlabs StyleGAN pickles hold code by design; they are read by the restricted
unpickler in :mod:`aras400k.models.stylegan3.official` instead.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import pickle
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from aras400k.errors import is_disk_full
from aras400k.files import sha256_file

__all__ = [
    "CHECKPOINT_HTTP_TIMEOUT_S",
    "CheckpointError",
    "SafeCheckpointIO",
    "SafeLoadingMixin",
    "checkpoint_errors",
    "checkpoint_normalization",
    "checkpoint_sha256",
    "generator_from_module",
    "install_safe_checkpoint_io",
    "is_url",
    "load_checkpoint",
    "load_prefixed_weights",
    "load_weights",
    "module_from_checkpoint",
    "outside_cli_instantiation",
    "read_checkpoint",
    "resolve_device",
    "save_hyperparameters",
]

_T = TypeVar("_T")
_M = TypeVar("_M", bound=nn.Module)

#: Seconds an ``http(s)://`` checkpoint download may wait for the server between reads.
CHECKPOINT_HTTP_TIMEOUT_S = 60.0

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNPICKLER = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")

MapLocation = str | torch.device | Callable[..., Any] | dict[str, str] | None


class CheckpointError(ValueError):
    """A checkpoint was refused or could not be read; the message is one line naming the file."""


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a URL (``http://``, ``s3://``, ``file://``, ...) rather than a local path."""
    return isinstance(location, str) and bool(_URL.match(location))


def _refusal(location: str, err: Exception) -> CheckpointError:
    """The one-line message for a checkpoint that ``weights_only=True`` refused."""
    found = _GLOBAL.search(str(err))
    if found is None:
        detail = _UNPICKLER.search(str(err))
        reason = detail.group(1).strip() if detail else _last_line(err)
        return CheckpointError(f"{location} is not a readable PyTorch checkpoint ({reason})")
    return CheckpointError(
        f"refused to load checkpoint {location}: it would import {found.group(1)}; aras400k reads only "
        "tensors and plain values from checkpoints and never runs code stored in them"
    )


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _source(location: str | Path, timeout: float) -> str | IO[bytes]:
    """What ``torch.load`` reads: a local path, or the remote file's bytes in memory."""
    text = str(location)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif text.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(text, timeout=timeout) as response:
                return io.BytesIO(response.read())
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise CheckpointError(f"cannot download checkpoint {text}: {reason}") from err
    elif is_url(text):
        import fsspec

        try:
            with fsspec.open(text, "rb") as remote:
                return io.BytesIO(remote.read())
        except (OSError, ValueError, ImportError) as err:
            raise CheckpointError(f"cannot read checkpoint {text}: {_last_line(err)}") from err
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    return str(path)


@contextmanager
def checkpoint_errors(location: str, unreadable: bool = True) -> Iterator[None]:
    """Turn torch's errors for a refused (or unreadable) checkpoint into a one-line :class:`CheckpointError`.

    ``location`` names the file in the message. With ``unreadable``, ``RuntimeError`` /
    ``EOFError`` (a corrupt or truncated file) are translated too; leave it false around
    code that raises them for other reasons.
    """
    try:
        yield
    except pickle.UnpicklingError as err:
        raise _refusal(location, err) from err
    except (RuntimeError, EOFError) as err:
        if not unreadable:
            raise
        raise CheckpointError(f"{location} is not a readable PyTorch checkpoint ({_last_line(err)})") from err


def load_checkpoint(
    location: str | Path,
    map_location: MapLocation = "cpu",
    timeout: float = CHECKPOINT_HTTP_TIMEOUT_S,
) -> Any:
    """Load a PyTorch checkpoint, unpickling tensors and plain values only.

    Args:
        location: Local path, ``file://``, ``http(s)://`` or fsspec URL (``s3://``, ``gs://``, ...).
            Remote files are read into memory, never into a cache folder.
        map_location: Where tensors are loaded (as ``torch.load``'s ``map_location``).
        timeout: Seconds an HTTP download may wait for the server.

    Returns:
        What the file holds.

    Raises:
        FileNotFoundError: If a local ``location`` does not exist.
        CheckpointError: If the file names code or anything else than tensors and plain
            values, is not a checkpoint, or cannot be downloaded.
    """
    source = _source(location, timeout)
    with checkpoint_errors(str(location)):
        return torch.load(source, map_location=map_location, weights_only=True)  # type: ignore[arg-type]


def checkpoint_sha256(location: str | Path, timeout: float = CHECKPOINT_HTTP_TIMEOUT_S) -> str:
    """The hex sha256 of a checkpoint file, local or remote, read as :func:`load_checkpoint` reads it."""
    source = _source(location, timeout)
    if isinstance(source, str):
        return sha256_file(source)
    return hashlib.sha256(source.read()).hexdigest()


def read_checkpoint(location: str | Path, map_location: MapLocation = "cpu") -> dict[str, Any]:
    """Read a Lightning checkpoint (a dict) with :func:`load_checkpoint`.

    Raises:
        FileNotFoundError: If a local ``location`` does not exist.
        CheckpointError: If the file is refused, unreadable, or not a dict.
    """
    checkpoint = load_checkpoint(location, map_location)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{location} is not a Lightning checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``auto`` (CUDA when available), ``cpu``, ``cuda[:N]`` or a device into a device, checking CUDA.

    Raises:
        ValueError: On an unknown name, or CUDA asked for where there is none.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
    return resolved


def checkpoint_normalization(checkpoint: Mapping[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` a model was trained with, or ``None`` when its checkpoint records none.

    They are the ``mean`` and ``std`` of a :class:`~aras400k.data.SegmentationDataModule`'s
    hyperparameters, which Lightning stores under ``datamodule_hyper_parameters``.
    """
    hparams = checkpoint.get("datamodule_hyper_parameters")
    if not isinstance(hparams, Mapping) or hparams.get("mean") is None or hparams.get("std") is None:
        return None
    return tuple(float(m) for m in hparams["mean"]), tuple(float(s) for s in hparams["std"])


def save_hyperparameters(module: Any, ignore: str | Sequence[str] | None = None) -> None:
    """``module.save_hyperparameters(ignore=ignore)`` for the ``__init__`` that calls this, keeping no frame alive.

    Lightning's own call (2.6) keeps its frame in one of its locals, a reference cycle
    that holds every calling frame, and so every local of every function up the stack,
    until a cyclic garbage collection. A function that builds a DataModule and iterates
    its loader then leaves the loader's worker processes running after it returns, and
    the collection that finally frees them, in whatever thread it happens to run,
    waits 5 s per worker (the queue that would tell them to stop is finalised first).
    Passing the caller's frame explicitly, and holding it in no local that outlives the
    call, frees it all on return. Subclasses that save their own arguments should call
    this rather than ``self.save_hyperparameters()``.
    """
    frame = inspect.currentframe()
    caller = frame.f_back if frame is not None else None
    del frame
    try:
        module.save_hyperparameters(ignore=ignore, frame=caller)
    finally:
        del caller


def outside_cli_instantiation(build: Callable[[], _T]) -> _T:
    """Build a LightningModule with its own hyper-parameters, even inside another module's LightningCLI instantiation.

    While LightningCLI instantiates a module, Lightning hands that module's config to
    every ``save_hyperparameters()`` call through a context variable, so a module built
    inside the outer one's ``__init__`` (``SPADEGAN(segmenter_ckpt=...)`` loading a
    segmenter) would record the outer module's arguments. Lightning offers no public
    switch, so the variable is cleared while ``build()`` runs; its result is returned.
    """
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # pragma: no cover - other Lightning versions
        return build()
    token = _given_hyperparameters.set(None)
    try:
        return build()
    finally:
        _given_hyperparameters.reset(token)


def module_from_checkpoint(
    module_class: type[_M],
    checkpoint: Mapping[str, Any],
    name: str,
    overrides: Mapping[str, Any] | None = None,
    required: str | None = None,
) -> tuple[_M, Mapping[str, Any]]:
    """Build ``module_class`` from a checkpoint's hyper-parameters (its weights are not loaded).

    Only the hyper-parameters ``module_class.__init__`` accepts are passed; nothing
    stored in the checkpoint is run, and only the class you name is built.

    Args:
        module_class: The LightningModule class that wrote the checkpoint (or a subclass
            taking the same arguments).
        checkpoint: The checkpoint dict (see :func:`read_checkpoint`).
        name: The checkpoint's name, for messages.
        overrides: Constructor arguments replacing the recorded ones (e.g. to skip
            loading weights the state dict holds anyway).
        required: A hyper-parameter a checkpoint of this class always records.

    Returns:
        ``(module, state_dict)``: the new module and the checkpoint's weights.

    Raises:
        ValueError: If the checkpoint lacks hyper-parameters or weights, or the class
            refuses its arguments.
    """
    hparams, state = checkpoint.get("hyper_parameters"), checkpoint.get("state_dict")
    if not isinstance(hparams, Mapping) or not isinstance(state, Mapping) or (required and required not in hparams):
        raise ValueError(
            f"{name} is not a {module_class.__name__} checkpoint (it lacks the module's hyper_parameters or state_dict)"
        )
    accepted = inspect.signature(module_class.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k in accepted}
    kwargs |= {k: v for k, v in (overrides or {}).items() if k in accepted}
    try:
        module = outside_cli_instantiation(lambda: module_class(**kwargs))
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{name}: cannot build {module_class.__name__} from its hyper-parameters ({err})") from err
    return module, state


def load_weights(module: nn.Module, weights: Mapping[str, Any], name: str, what: str) -> None:
    """Load ``weights`` into ``module`` strictly, failing with one line that names the file.

    Args:
        module: The module to fill.
        weights: Its state dict.
        name: The checkpoint's name, for messages.
        what: What the weights are, for messages (``"the ema.shadow weights"``).

    Raises:
        ValueError: If the weights do not fit.
    """
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{name}: {what} do not fit {type(module).__name__} ({_first_line(err)})") from err


def generator_from_module(
    module_class: type[nn.Module],
    checkpoint: Mapping[str, Any],
    prefix: str,
    name: str,
    overrides: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a GAN module subclass from a checkpoint's hyper-parameters and return its generator, loaded.

    This is how a generator of your own (built in a subclass's ``configure_models``) is
    sampled: the subclass builds it as in training, then the checkpoint's ``generator.*``
    or ``ema.shadow.*`` weights are loaded into it, strictly.

    Args:
        module_class: The LightningModule class that trained the checkpoint.
        checkpoint: The checkpoint dict (see :func:`read_checkpoint`).
        prefix: State-dict prefix of the wanted weights (``"ema.shadow."`` or ``"generator."``).
        name: The checkpoint's name, for messages.
        overrides: As for :func:`module_from_checkpoint` (e.g. to skip networks only training needs).

    Returns:
        The module's ``generator`` attribute with the checkpoint's weights.

    Raises:
        ValueError: If the checkpoint does not fit the class.
    """
    module, state = module_from_checkpoint(module_class, checkpoint, name, overrides)
    generator = getattr(module, "generator", None)
    if not isinstance(generator, nn.Module):
        raise ValueError(f"{module_class.__name__} has no generator module to sample from")
    load_prefixed_weights(generator, state, prefix, name, f" of {module_class.__name__}")
    return generator


def load_prefixed_weights(module: nn.Module, state: Mapping[str, Any], prefix: str, name: str, of: str = "") -> None:
    """:func:`load_weights` with the entries of ``state`` under ``prefix`` (``"ema.shadow."``), prefix removed.

    Raises:
        ValueError: ``NAME: the PREFIX weights{of} do not fit MODULE (...)`` if they do not fit.
    """
    weights = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    load_weights(module, weights, name, f"the {prefix.rstrip('.')} weights{of}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class SafeCheckpointIO(TorchCheckpointIO):
    """The Trainer's checkpoint plugin: saves as Lightning does, loads through :func:`load_checkpoint`.

    A caller's ``weights_only=False`` is ignored: nothing loaded through this plugin can
    run code. Used by the ``aras`` CLI; for a plain Trainer pass
    ``plugins=[SafeCheckpointIO()]`` (aras400k's modules install it in ``setup`` anyway).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        """Save as Lightning does; a full disk raises an ``OSError`` that names ``path``."""
        try:
            super().save_checkpoint(checkpoint, path, storage_options)
        except OSError as err:
            if err.filename is not None or not is_disk_full(err):
                raise
            raise OSError(err.errno, f"{err.strerror} (writing checkpoint)", str(path)) from err

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Any = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load the checkpoint at ``path`` (local, URL or fsspec) with tensors and plain values only.

        ``weights_only`` is ignored (always true).
        """
        del weights_only
        return read_checkpoint(path, map_location)


def install_safe_checkpoint_io(trainer: Any) -> None:
    """Make a ``lightning.Trainer`` load checkpoints through :class:`SafeCheckpointIO` (no strategy: left alone).

    Lightning's default :class:`TorchCheckpointIO` is replaced. Any other plugin is
    refused, since its loading cannot be vouched for (a wrapping plugin such as async
    saving gets a default inner plugin from Lightning each time it is used).

    Raises:
        ValueError: If the trainer uses another checkpoint plugin than a :class:`SafeCheckpointIO`.
    """
    strategy = getattr(trainer, "strategy", None)
    if strategy is None:
        return
    current = strategy._checkpoint_io  # None until first used: Lightning then makes a TorchCheckpointIO
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = SafeCheckpointIO()
    elif not isinstance(current, SafeCheckpointIO):
        raise ValueError(
            f"the trainer's checkpoint plugin {type(current).__name__} may run code stored in checkpoints; "
            "use aras400k.checkpoints.SafeCheckpointIO (or a subclass of it)"
        )


class SafeLoadingMixin:
    """For LightningModules: safe ``load_from_checkpoint`` and a safe Trainer plugin from ``setup``.

    Put it first among the bases (``class MyTask(SafeLoadingMixin, LightningModule)``);
    aras400k's modules already have it, so subclasses inherit it.
    """

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: MapLocation = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build the module from a checkpoint read by :func:`load_checkpoint`; the arguments are Lightning's."""
        kwargs.pop("weights_only", None)
        source = _source(checkpoint_path, CHECKPOINT_HTTP_TIMEOUT_S)
        with checkpoint_errors(str(checkpoint_path), unreadable=False):
            return super().load_from_checkpoint(  # type: ignore[misc]
                source, map_location=map_location, hparams_file=hparams_file, strict=strict, weights_only=True, **kwargs
            )

    def setup(self, stage: str) -> None:
        """Install :class:`SafeCheckpointIO` on the Trainer before it restores any ``ckpt_path``."""
        install_safe_checkpoint_io(getattr(self, "_trainer", None))
        parent = getattr(super(), "setup", None)
        if parent is not None:
            parent(stage)
