"""Mask-conditioned synthesis: SPADE generator, U-Net discriminator, and their losses.

- :mod:`~aras400k.models.spade.normalization`: ``SPADE`` and ``one_hot_mask``.
- :mod:`~aras400k.models.spade.generator`: ``SPADEResnetBlock``, ``SPADEGenerator``
  (OASIS-style 3D noise), ``ImageEncoder`` (SPADE's VAE).
- :mod:`~aras400k.models.spade.discriminator`: ``UNetDiscriminator`` (global and
  per-pixel heads; ``unetgan`` or ``oasis`` conditioning).
- :mod:`~aras400k.models.spade.losses`: adversarial, N+1, CutMix/LabelMix consistency,
  feature-matching, perceptual and KL losses.
- :mod:`~aras400k.models.spade.module`: ``SPADEGAN``, the LightningModule that trains
  them (EMA sampling, NaN guard, sample grids, segmentation score), and
  ``load_spade_generator`` for sampling from its checkpoints.
- :mod:`~aras400k.models.spade.figures`: the mask / real / samples grid.

Each submodule's ``__all__`` is the one list of its public names; the package
re-exports them all.
"""

from aras400k.models.spade import discriminator, generator, losses, module, normalization
from aras400k.models.spade.discriminator import *  # noqa: F403 - re-exports discriminator.__all__
from aras400k.models.spade.generator import *  # noqa: F403 - re-exports generator.__all__
from aras400k.models.spade.losses import *  # noqa: F403 - re-exports losses.__all__
from aras400k.models.spade.module import *  # noqa: F403 - re-exports module.__all__
from aras400k.models.spade.normalization import *  # noqa: F403 - re-exports normalization.__all__

__all__: list[str] = []
__all__ += discriminator.__all__
__all__ += generator.__all__
__all__ += losses.__all__
__all__ += module.__all__
__all__ += normalization.__all__
