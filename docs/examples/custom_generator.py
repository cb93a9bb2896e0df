"""A new generator for the mask-conditioned GAN: SPADE with an illumination ramp.

A satellite patch is often brighter on one side than the other (haze, sun angle,
thin cloud). ``IlluminationGenerator`` subclasses :class:`SPADEGenerator` and
overrides one method, ``noise_map``: the global noise vector is still broadcast over
the patch, but modulated by a linear ramp across it whose direction and strength come
from the first two noise values, scaled by a learned gain that starts at zero (so
training starts from the plain SPADE generator). The ramp reaches every SPADE layer,
because they all read the noise channels with the mask.

``IlluminationSPADEGAN`` plugs it into the training module by overriding
``configure_models``; losses, EMA, guard, sample grids and checkpoints are the
parent's. Train it with ``aras-fit`` (``docs/examples`` must be importable)::

    export PYTHONPATH=docs/examples
    aras-fit --config configs/gan_spade.yaml --model.class_path custom_generator.IlluminationSPADEGAN

``aras-synth spade`` samples it when told the module class, which builds the
generator as in training before the checkpoint's weights are loaded::

    aras-synth spade --ckpt runs/gan_spade/checkpoints/last.ckpt --masks data/demo/train \
        --out data/synth_illum --module_class custom_generator.IlluminationSPADEGAN

(without ``--module_class`` it rebuilds a plain ``SPADEGenerator`` and refuses the
checkpoint: its ``illumination_gain`` weight is unexpected).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aras400k.models.gan import ExponentialMovingAverage
from aras400k.models.spade import SPADEGAN, SPADEGenerator, load_spade_generator


class IlluminationGenerator(SPADEGenerator):
    """A SPADE generator whose global noise carries a learned illumination ramp across the patch.

    Takes the arguments of :class:`SPADEGenerator`; ``noise`` must be ``global``.

    Raises:
        ValueError: If ``noise`` is not ``global``, or ``z_dim`` is below 2.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.noise != "global" or self.z_dim < 2:
            raise ValueError("IlluminationGenerator needs noise='global' and z_dim >= 2")
        #: Strength of the ramp; 0 at initialisation (the plain SPADE generator).
        self.illumination_gain = nn.Parameter(torch.zeros(()))

    def noise_map(self, mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The broadcast global noise, times ``1 + gain * ramp``.

        Args:
            mask: ``(B, num_classes, H, W)`` one-hot masks.
            z: ``(B, z_dim)`` global noise.

        Returns:
            ``(B, z_dim, H, W)`` noise channels.
        """
        base = super().noise_map(mask, z)
        height, width = mask.shape[-2:]
        ys = torch.linspace(-1.0, 1.0, height, device=mask.device, dtype=base.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=mask.device, dtype=base.dtype)
        # The ramp's gradient is (z[0], z[1]): a random direction and strength per image.
        ramp = z[:, 0, None, None] * xs[None, None, :] + z[:, 1, None, None] * ys[None, :, None]
        return base * (1 + self.illumination_gain * ramp[:, None])


def illumination_generator_from_hparams(hparams: Mapping[str, Any]) -> IlluminationGenerator:
    """Build the generator of an :class:`IlluminationSPADEGAN` from its hyperparameters.

    Args:
        hparams: The module's ``hparams`` (or a checkpoint's ``hyper_parameters``).

    Returns:
        A freshly initialised generator.
    """
    return IlluminationGenerator(
        num_classes=hparams["num_classes"],
        num_upsamplings=hparams["g_num_upsamplings"],
        base_channels=hparams["g_base_channels"],
        max_channels=hparams["g_max_channels"],
        noise=hparams["noise"],
        z_dim=hparams["z_dim"],
        spade_hidden=hparams["g_spade_hidden"],
        norm=hparams["norm"],
        use_encoder=hparams["use_encoder"],
        encoder_downsamplings=hparams["encoder_downsamplings"],
    )


class IlluminationSPADEGAN(SPADEGAN):
    """``SPADEGAN`` with :class:`IlluminationGenerator` as its generator; every argument is the parent's."""

    def configure_models(self) -> None:
        """Build the parent's networks, then replace the generator and its EMA copy."""
        super().configure_models()  # discriminator, augmentation, NaN guard (and a generator we replace)
        self.generator = illumination_generator_from_hparams(self.hparams)
        hp = self.hparams
        self.ema = ExponentialMovingAverage(self.generator, decay=hp["ema_decay"], warmup=hp["ema_warmup"])


def load_illumination_generator(path: str | Path, use_ema: bool = True) -> IlluminationGenerator:
    """Load the (EMA) generator of an :class:`IlluminationSPADEGAN` checkpoint with ``weights_only=True``.

    The library's loader, told the module class (what ``--module_class`` does).

    Args:
        path: Lightning checkpoint written by ``aras-fit``.
        use_ema: Load the EMA weights (the ones to sample from).

    Returns:
        The generator in eval mode, on the CPU.
    """
    generator = load_spade_generator(path, use_ema=use_ema, module_class=IlluminationSPADEGAN)
    assert isinstance(generator, IlluminationGenerator)
    return generator
