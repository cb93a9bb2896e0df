"""Mask-conditioned synthesis: SPADE generator, U-Net discriminator, and their losses.

Submodules: ``normalization`` (``SPADE``, ``one_hot_mask``), ``generator``
(``SPADEGenerator`` with OASIS-style 3D noise, SPADE's VAE ``ImageEncoder``),
``discriminator`` (``UNetDiscriminator``), ``losses``, ``module`` (``SPADEGAN``, the
LightningModule that trains them, and ``load_spade_generator``) and ``figures`` (the
mask / real / samples grid).

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
