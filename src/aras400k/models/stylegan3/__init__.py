"""StyleGAN3 and StyleGAN2 networks in pure PyTorch (Karras et al. 2021; 2020).

* :func:`build_generator` / :class:`Generator` (which also takes the ``init_kwargs``
  of official checkpoints): configs ``stylegan3-t``, ``stylegan3-r`` and ``stylegan2``;
  :func:`build_discriminator` / :class:`Discriminator`, shared by all configs.
* :class:`StyleGAN3`: the LightningModule that trains them (ADA, lazy R1, EMA, ...).
* :mod:`~aras400k.models.stylegan3.filters`: filter design, resampling and the
  filtered leaky ReLU; :mod:`~aras400k.models.stylegan3.equivariance`: EQ-T / EQ-R.
* :func:`load_official` reads NVlabs' network pickles without running their code;
  :func:`export_official_state_dict` is the inverse.

Module, parameter and buffer names match NVlabs' official implementation, so
official weights map without a rename table.
"""

from aras400k.models.stylegan3.discriminator import (
    Discriminator,
    DiscriminatorBlock,
    DiscriminatorEpilogue,
    MinibatchStdLayer,
    build_discriminator,
)
from aras400k.models.stylegan3.equivariance import (
    apply_fractional_translation,
    apply_integer_translation,
    apply_pseudo_rotation,
    apply_rotation,
    compute_eq_r,
    compute_eq_t,
    compute_equivariance,
)
from aras400k.models.stylegan3.filters import (
    design_lowpass_filter,
    filtered_lrelu,
    filtered_lrelu_reference,
    setup_filter,
    upfirdn2d,
)
from aras400k.models.stylegan3.generator import CONFIGS, Config, Generator, build_generator
from aras400k.models.stylegan3.layers import Conv2dLayer, FullyConnectedLayer, modulated_conv2d
from aras400k.models.stylegan3.mapping import MappingNetwork
from aras400k.models.stylegan3.module import StyleGAN3
from aras400k.models.stylegan3.official import (
    OfficialNetworks,
    UnsafePickleError,
    export_official_state_dict,
    load_official,
)
from aras400k.models.stylegan3.stylegan2 import (
    StyleGAN2SynthesisLayer,
    StyleGAN2SynthesisNetwork,
    SynthesisBlock,
    ToRGBLayer,
)
from aras400k.models.stylegan3.synthesis import (
    LayerSchedule,
    SynthesisInput,
    SynthesisLayer,
    SynthesisNetwork,
    layer_schedule,
)

__all__ = [
    "CONFIGS",
    "Config",
    "Conv2dLayer",
    "Discriminator",
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "FullyConnectedLayer",
    "Generator",
    "LayerSchedule",
    "MappingNetwork",
    "MinibatchStdLayer",
    "OfficialNetworks",
    "StyleGAN2SynthesisLayer",
    "StyleGAN2SynthesisNetwork",
    "StyleGAN3",
    "SynthesisBlock",
    "SynthesisInput",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "UnsafePickleError",
    "apply_fractional_translation",
    "apply_integer_translation",
    "apply_pseudo_rotation",
    "apply_rotation",
    "build_discriminator",
    "build_generator",
    "compute_eq_r",
    "compute_eq_t",
    "compute_equivariance",
    "design_lowpass_filter",
    "export_official_state_dict",
    "filtered_lrelu",
    "filtered_lrelu_reference",
    "layer_schedule",
    "load_official",
    "modulated_conv2d",
    "setup_filter",
    "upfirdn2d",
]
