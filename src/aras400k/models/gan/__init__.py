"""Architecture-independent GAN training parts: the ``GANModule`` base, losses, regularisers, ADA, EMA.

Both GAN LightningModules (StyleGAN3 and SPADE) derive from :class:`GANModule` and
compose these parts, so a user can swap one without touching a network class.
``GeneratorFID`` and ``FIDSampler`` are re-exported from :mod:`aras400k.callbacks`.
Each submodule's ``__all__`` is the one list of its public names; the package
re-exports them all.
"""

from aras400k.callbacks.fid import FIDSampler, GeneratorFID
from aras400k.models.gan import augment, ema, losses, module, regularizers
from aras400k.models.gan.augment import *  # noqa: F403 - re-exports augment.__all__
from aras400k.models.gan.ema import *  # noqa: F403 - re-exports ema.__all__
from aras400k.models.gan.losses import *  # noqa: F403 - re-exports losses.__all__
from aras400k.models.gan.module import *  # noqa: F403 - re-exports module.__all__
from aras400k.models.gan.regularizers import *  # noqa: F403 - re-exports regularizers.__all__

__all__: list[str] = ["FIDSampler", "GeneratorFID"]
__all__ += augment.__all__
__all__ += ema.__all__
__all__ += losses.__all__
__all__ += module.__all__
__all__ += regularizers.__all__
