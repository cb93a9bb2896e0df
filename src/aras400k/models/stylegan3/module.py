"""``StyleGAN3``: the unconditional StyleGAN3 / StyleGAN2 training loop as a LightningModule.

The module composes this package's networks with the architecture-independent parts
of :mod:`aras400k.models.gan` (losses, lazy R1, path length, style mixing, blur, ADA,
EMA, NaN guard), following NVlabs' ``train.py``, ``training/training_loop.py`` and
``training/loss.py``. One training iteration runs the official phases in order:

1. **Gmain**: non-saturating logistic loss on ``D(augment(blur(G(z))))`` (style mixing
   with probability 0.9 for ``stylegan2``).
2. **Greg** (``stylegan2`` only, every 4 iterations): path-length penalty on half the
   batch, weight 2, multiplied by the interval.
3. **Dmain**: logistic loss on augmented (and, for the StyleGAN3 configs, blurred) real
   and generated images; the signs of ``D(real)`` feed ADA.
4. **Dreg** (every ``r1_interval`` = 16 iterations): R1 on real images,
   ``gamma / 2 * interval * ||grad D||^2``.

Both optimisers are Adam with betas ``(0, 0.99)``, their learning rate and betas corrected
for the lazy regularisation (:func:`~aras400k.models.gan.lazy_optimizer_params`). After
the phases, the EMA generator and ADA's ``p`` are updated. Steps whose loss or gradients
are NaN/inf are skipped and counted (logged as ``skipped_steps``).

The ``iterations`` buffer of :class:`~aras400k.models.gan.GANModule` (not Lightning's
``global_step``, which counts optimiser steps) drives every schedule. All state (EMA
weights, ADA ``p``, ``pl_mean``, skip counts, iterations) lives in buffers or submodules,
so it is in the checkpoint's ``state_dict`` and a run resumes from ``ckpt_path``.

FID during training: add the :class:`~aras400k.callbacks.GeneratorFID` callback (it
logs ``val_fid`` of :meth:`StyleGAN3.fid_samples`). Sample grids
(``samples/train_it{N}.png``, ``samples/val_it{N}.png``) come from the base's
:class:`~aras400k.callbacks.SampleGrid`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from aras400k.checkpoints import save_hyperparameters
from aras400k.errors import check_at_least, check_choice
from aras400k.files import atomic_path
from aras400k.models.gan import (
    AdaptiveAugment,
    AugmentPipe,
    ExponentialMovingAverage,
    GANModule,
    NonFiniteGuard,
    PathLengthRegularizer,
    blur_images,
    blur_sigma,
    discriminator_logistic_loss,
    generator_logistic_loss,
    lazy_optimizer_params,
    r1_penalty,
    style_mixing,
    stylegan_blur_fade_kimg,
)
from aras400k.models.stylegan3.discriminator import Discriminator, build_discriminator
from aras400k.models.stylegan3.generator import CONFIGS, Generator, build_generator

__all__ = ["StyleGAN3"]

StyleGANConfig = Literal["stylegan3-t", "stylegan3-r", "stylegan2"]
AugMode = Literal["noaug", "ada", "fixed"]

_AUG_MODES = ("noaug", "ada", "fixed")
_ADAM_BETAS = (0.0, 0.99)
_PL_INTERVAL = 4  # G_reg_interval of the official --cfg=stylegan2.
_PL_BATCH_SHRINK = 2
#: First latent seed of the FID samples (apart from the sample-grid seeds 0, 1, ...).
FID_SEED_OFFSET = 1_000_000


class StyleGAN3(GANModule):
    """Unconditional StyleGAN3 (configs T and R) or StyleGAN2, trained with ADA.

    Arguments named like the official ``train.py`` options take its defaults; where the
    official option is required (``cfg``, ``gamma``, ``batch``) the default is the paper's
    command ``--cfg=stylegan2 --gamma=0.01 --mirror=1 --aug=ada``. ``None`` means "the
    official value for this ``cfg``".

    The phase methods (``generator_main_step`` ... ``discriminator_reg_step``) take the
    iteration's batch size ``n`` or real images ``real`` (``(N, 3, H, W)`` in ``[-1,
    1]``), the blur strength ``sigma`` of the discriminator's inputs and the optimiser of
    the network they train, and return their loss terms for logging.

    Args:
        cfg: Network configuration (``--cfg``).
        resolution: Image resolution (square, a power of two).
        gamma: R1 weight (``--gamma``).
        mirror: Randomly x-flip real images here (``--mirror``), for data modules that do not
            flip. Two independent fair flips are one, so ``true`` here and in
            ``GANDataModule`` (Lightning wants them equal) is ``--mirror=1``.
        aug: Augmentation mode (``--aug``): none, ADA (adaptive ``p``) or a fixed ``p``.
        target: ADA target of ``E[sign(D(real))]`` (``--target``).
        p: Augmentation probability for ``aug="fixed"`` (``--p``).
        batch: Total batch size of the schedules (EMA half-life, blur fade, ADA speed,
            magnitude EMA); ``None``: each training batch's times the number of processes.
        glr: Generator learning rate (``--glr``); ``None``: 0.002 for ``stylegan2``, else 0.0025.
        dlr: Discriminator learning rate (``--dlr``).
        map_depth: Mapping network depth (``--map-depth``); ``None``: 8 for ``stylegan2``, else 2.
        cbase: Capacity multiplier (``--cbase``).
        cmax: Maximum channels per layer (``--cmax``).
        z_dim: Latent dimensionality.
        w_dim: Intermediate latent dimensionality.
        mbstd_group: Minibatch standard deviation group size (``--mbstd-group``).
        ema_kimg: EMA half-life in thousands of images; ``None``: ``batch * 10 / 32``.
        ema_rampup: EMA ramp-up coefficient; ``None`` disables the ramp-up.
        r1_interval: Lazy R1 interval in iterations (16).
        pl_weight: Path-length weight; ``None``: 2 for ``stylegan2``, 0 (off) otherwise.
        style_mixing_prob: Style-mixing probability; ``None``: 0.9 for ``stylegan2``, else 0.
        blur_fade_kimg: Blur fade length in kimg at batch 32 (scaled by ``batch / 32``).
        blur_sigma: Initial blur of the discriminator's inputs in pixels; ``None``: 10 for
            the StyleGAN3 configs, 0 (off) for ``stylegan2``.
        augpipe: ADA transforms (``--augpipe``; ``"bgc"``: blit, geometric, colour).
        ada_interval: Adjust ADA's ``p`` every this many iterations (4).
        ada_kimg: ADA speed: thousands of images for ``p`` to move by 1 (500).
        max_consecutive_skips: Raise after this many NaN/inf steps in a row (``None``: never).
        sample_seeds: Images in the fixed-seed sample grid (image ``i`` uses seed ``i``).
        sample_every_n_steps: Write a sample grid every this many training iterations
            (0: only after validation).
        kimg: Stop once ``iterations x batch`` reaches ``kimg x 1000`` real images
            (``--kimg``); ``None``: the Trainer's own limits decide.
        map: Deprecated name of ``map_depth`` (accepted with a warning).

    Raises:
        ValueError: If ``cfg`` or ``aug`` is unknown, or a number is out of range.
    """

    def __init__(
        self,
        cfg: StyleGANConfig = "stylegan2",
        resolution: int = 256,
        gamma: float = 0.01,
        mirror: bool = False,
        aug: AugMode = "ada",
        target: float = 0.6,
        p: float = 0.2,
        batch: int | None = None,
        glr: float | None = None,
        dlr: float = 0.002,
        map_depth: int | None = None,
        cbase: int = 32768,
        cmax: int = 512,
        z_dim: int = 512,
        w_dim: int = 512,
        mbstd_group: int = 4,
        ema_kimg: float | None = None,
        ema_rampup: float | None = 0.05,
        r1_interval: int = 16,
        pl_weight: float | None = None,
        style_mixing_prob: float | None = None,
        blur_fade_kimg: float = 200.0,
        blur_sigma: float | None = None,
        augpipe: AugmentPipe = "bgc",
        ada_interval: int = 4,
        ada_kimg: float = 500.0,
        max_consecutive_skips: int | None = None,
        sample_seeds: int = 16,
        sample_every_n_steps: int = 500,
        kimg: float | None = None,
        map: int | None = None,  # deprecated name of map_depth, kept so old configs and checkpoints load
    ) -> None:
        super().__init__()
        if map is not None:
            warnings.warn(
                "StyleGAN3(map=...) is deprecated and will be removed in the next release; use map_depth "
                "(the official --map-depth)",
                FutureWarning,
                stacklevel=2,
            )
            if map_depth is not None and map_depth != map:
                raise ValueError(f"map={map} and map_depth={map_depth} disagree; give map_depth only")
            map_depth = map
        save_hyperparameters(self, ignore=["map"])
        self.hparams["map_depth"] = map_depth
        _check_arguments(self.hparams)
        stylegan2 = cfg == "stylegan2"
        self.glr = glr if glr is not None else (0.002 if stylegan2 else 0.0025)
        self.pl_weight = pl_weight if pl_weight is not None else (2.0 if stylegan2 else 0.0)
        self.style_mixing_prob = style_mixing_prob if style_mixing_prob is not None else (0.9 if stylegan2 else 0.0)
        self.blur_init_sigma = blur_sigma if blur_sigma is not None else (0.0 if stylegan2 else 10.0)
        #: Total batch size of the last training iteration (for the ``kimg`` budget).
        self.last_batch_size: int | None = None
        self.configure_models()

    def configure_models(self) -> None:
        """Build G, D, the EMA generator, ADA, the path-length regulariser and the NaN guard (override to swap one)."""
        hp = self.hparams
        self.generator: Generator = build_generator(
            hp["cfg"],
            resolution=hp["resolution"],
            channel_base=hp["cbase"],
            channel_max=hp["cmax"],
            map_depth=hp["map_depth"],
            z_dim=hp["z_dim"],
            w_dim=hp["w_dim"],
            batch_size=hp["batch"],
        )
        self.discriminator: Discriminator = build_discriminator(
            resolution=hp["resolution"],
            channel_base=hp["cbase"],
            channel_max=hp["cmax"],
            mbstd_group_size=hp["mbstd_group"],
        )
        # ema_kimg None: the official batch * 10 / 32 of the actual batch at every update.
        self.ema = ExponentialMovingAverage(self.generator, ema_kimg=hp["ema_kimg"], ema_rampup=hp["ema_rampup"])
        aug = hp["aug"]
        self.augment = AdaptiveAugment(
            pipe=hp["augpipe"],
            target=hp["target"] if aug == "ada" else None,
            interval=hp["ada_interval"],
            ada_kimg=hp["ada_kimg"],
            fixed_p={"noaug": 0.0, "fixed": hp["p"], "ada": None}[aug],
        )
        self.path_length = PathLengthRegularizer(weight=self.pl_weight)
        self.guard = NonFiniteGuard(max_consecutive=hp["max_consecutive_skips"])

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """``[G's, D's]`` Adam with betas ``(0, 0.99)``, corrected for lazy regularisation."""
        g_interval = _PL_INTERVAL if self.pl_weight > 0 else None
        d_interval = self.hparams["r1_interval"] if self.hparams["gamma"] > 0 else None
        g = lazy_optimizer_params(self.glr, _ADAM_BETAS, g_interval)
        d = lazy_optimizer_params(self.hparams["dlr"], _ADAM_BETAS, d_interval)
        return [
            torch.optim.Adam(self.generator.parameters(), lr=g.lr, betas=g.betas, eps=1e-8),
            torch.optim.Adam(self.discriminator.parameters(), lr=d.lr, betas=d.betas, eps=1e-8),
        ]

    def latents(self, n: int, seed: int) -> torch.Tensor:
        """``(n, z_dim)`` latents of samples ``seed, ..., seed + n - 1``, on the module's device.

        Sample ``i`` depends only on its own seed ``seed + i``, so split or resumed
        sampling runs produce the same images.
        """
        z = [torch.randn(self.hparams["z_dim"], generator=torch.Generator().manual_seed(seed + i)) for i in range(n)]
        return torch.stack(z).to(self.device)

    @torch.no_grad()
    def generate(
        self,
        n: int | None = None,
        z: torch.Tensor | None = None,
        seed: int = 0,
        truncation_psi: float = 1.0,
        use_ema: bool = True,
        noise_mode: Literal["random", "const", "none"] = "const",
    ) -> torch.Tensor:
        """Generate ``(N, 3, resolution, resolution)`` images clamped to ``[-1, 1]``.

        Args:
            n: Number of images, drawn from seeds ``seed .. seed + n - 1`` (see :meth:`latents`).
            z: ``(N, z_dim)`` latents instead of ``n``.
            seed: Seed of the first image when ``n`` is given.
            truncation_psi: Truncation strength (1: none; 0: the average-``w`` image).
            use_ema: Sample from the EMA generator (as for evaluation) or the trained one.
            noise_mode: Noise inputs of the StyleGAN2 synthesis; ``"const"`` makes the
                output a function of ``z`` alone.

        Raises:
            ValueError: If neither or both of ``n`` and ``z`` are given.
        """
        if (n is None) == (z is None):
            raise ValueError("pass exactly one of n (number of images) and z (latents)")
        if z is None:
            assert n is not None
            z = self.latents(n, seed)
        with self.sampler(use_ema) as net:
            return net(z.to(self.device), truncation_psi=truncation_psi, noise_mode=noise_mode).clamp(-1, 1)

    def batch_size(self, real: torch.Tensor) -> int:
        """Total batch size of the schedules: ``batch``, or ``len(real)`` times the number of processes."""
        if self.hparams["batch"] is not None:
            return int(self.hparams["batch"])
        world = self.trainer.world_size if self._trainer is not None else 1
        return len(real) * world

    def current_blur_sigma(self, batch_size: int) -> float:
        """Blur of the discriminator's inputs in pixels at the current iteration (0 when disabled)."""
        if self.blur_init_sigma <= 0:
            return 0.0
        fade = stylegan_blur_fade_kimg(batch_size, self.hparams["blur_fade_kimg"])
        return blur_sigma(int(self.iterations) * batch_size, fade, self.blur_init_sigma)

    def run_generator(self, z: torch.Tensor, update_emas: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``z`` and synthesise with style mixing (training mode); returns ``(images, ws)``.

        ``update_emas`` updates the tracked average ``w`` (and magnitude EMAs).
        """
        ws = self.generator.mapping(z, None, update_emas=update_emas)
        if self.style_mixing_prob > 0:
            ws_mix = self.generator.mapping(torch.randn_like(z), None, update_emas=False)
            ws = style_mixing(ws, ws_mix, self.style_mixing_prob)
        return self.generator.synthesis(ws, update_emas=update_emas), ws

    def run_discriminator(self, images: torch.Tensor, sigma: float) -> torch.Tensor:
        """Blur (``sigma`` > 0), augment and score images, as every image the discriminator sees is."""
        if sigma > 0:
            images = blur_images(images, sigma)
        return self.discriminator(self.augment(images))

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.hparams["z_dim"], device=self.device)

    def generator_main_step(self, n: int, sigma: float, optimizer: Any) -> dict[str, torch.Tensor]:
        """Gmain: non-saturating logistic loss on ``n`` generated images; returns ``{"g_loss"}``."""
        with self.toggled_optimizer(optimizer):
            fake, _ = self.run_generator(self._z(n))
            loss = generator_logistic_loss(self.run_discriminator(fake, sigma))
            self._optimise(loss, self.generator, optimizer, "G")
        return {"g_loss": loss.detach()}

    def generator_reg_step(self, n: int, optimizer: Any) -> dict[str, torch.Tensor]:
        """Greg: path-length penalty on ``n // 2`` images, scaled by the interval; ``{"pl_penalty", "pl_mean"}``."""
        with self.toggled_optimizer(optimizer):
            fake, ws = self.run_generator(self._z(max(n // _PL_BATCH_SHRINK, 1)))
            penalty = self.path_length(fake, ws)
            self._optimise(penalty * _PL_INTERVAL, self.generator, optimizer, "Greg")
        return {"pl_penalty": penalty.detach(), "pl_mean": self.path_length.pl_mean.detach().clone()}

    def discriminator_main_step(self, real: torch.Tensor, sigma: float, optimizer: Any) -> dict[str, torch.Tensor]:
        """Dmain: logistic loss on real and generated images, feeding ADA; ``{"d_loss", "d_real", "d_fake"}``."""
        with torch.no_grad():
            fake, _ = self.run_generator(self._z(len(real)), update_emas=True)
        with self.toggled_optimizer(optimizer):
            real_logits = self.run_discriminator(real, sigma)
            fake_logits = self.run_discriminator(fake, sigma)
            loss = discriminator_logistic_loss(real_logits, fake_logits)
            if self._optimise(loss, self.discriminator, optimizer, "D"):
                self.augment.accumulate(real_logits)  # Only finite logits reach ADA.
        return {"d_loss": loss.detach(), "d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}

    def discriminator_reg_step(self, real: torch.Tensor, sigma: float, optimizer: Any) -> dict[str, torch.Tensor]:
        """Dreg: lazy R1, ``gamma / 2 * r1_interval * E||grad_x D(x)||^2`` on real images.

        Returns ``{"r1_penalty"}``, the unweighted mean squared gradient norm.
        """
        with self.toggled_optimizer(optimizer):
            real = real.detach().requires_grad_(True)
            penalty = r1_penalty(self.run_discriminator(real, sigma), real)
            scale = self.hparams["gamma"] / 2 * self.hparams["r1_interval"]
            self._optimise(penalty * scale, self.discriminator, optimizer, "Dreg")
        return {"r1_penalty": penalty.detach()}

    def _mirror(self, real: torch.Tensor) -> torch.Tensor:
        if not self.hparams["mirror"]:
            return real
        flip = torch.rand(len(real), device=real.device) < 0.5
        return torch.where(flip[:, None, None, None], real.flip(-1), real)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """One iteration on ``batch["image"]``: Gmain, Greg (lazy), Dmain, Dreg (lazy), then EMA and ADA updates.

        ``batch_idx`` is unused: the schedules follow ``iterations``.
        """
        real = self._mirror(batch["image"])
        n = len(real)
        batch_size = self.batch_size(real)
        sigma = self.current_blur_sigma(batch_size)
        opt_g, opt_d = self.optimizers()  # type: ignore[misc,attr-defined]
        it = int(self.iterations)
        terms = self.generator_main_step(n, sigma, opt_g)
        if self.pl_weight > 0 and it % _PL_INTERVAL == 0:
            terms |= self.generator_reg_step(n, opt_g)
        terms |= self.discriminator_main_step(real, sigma, opt_d)
        if self.hparams["gamma"] > 0 and it % self.hparams["r1_interval"] == 0:
            terms |= self.discriminator_reg_step(real, sigma, opt_d)
        self.update_ema(batch_size)
        self.augment.adjust(batch_size)
        self.iterations += 1
        self.last_batch_size = batch_size
        self._log_training(terms, n, sigma)
        if self.kimg_reached(batch_size) and self._trainer is not None:
            self.trainer.should_stop = True

    def kimg_reached(self, batch_size: int | None = None) -> bool:
        """Whether ``iterations x batch_size >= kimg x 1000`` (always false without ``kimg``).

        ``batch_size`` defaults to ``batch``, else the last training batch's.
        """
        kimg = self.hparams.get("kimg")
        size = batch_size or self.hparams["batch"] or self.last_batch_size
        return kimg is not None and size is not None and int(self.iterations) * size >= kimg * 1000

    def _log_training(self, terms: Mapping[str, torch.Tensor], n: int, sigma: float) -> None:
        values: dict[str, Any] = {f"train_{name}": value for name, value in terms.items()}
        values |= {
            "ada_p": self.augment.p.detach().clone(),
            "ada_rt": self.augment.rt.detach().clone(),
            "blur_sigma": float(sigma),
            "skipped_steps": float(self.guard.num_skipped),
            "iterations": float(self.iterations),
        }
        self.log_dict(values, on_step=True, on_epoch=False, batch_size=n)
        progress = {"d_loss": terms["d_loss"], "g_loss": terms["g_loss"], "p": values["ada_p"]}
        self.log_dict(progress, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=n)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Log ``val_d_real_sign``, ``E[sign(D(real))]`` on unaugmented images: against ``ada_rt``, D's overfitting."""
        logits = self.discriminator(batch["image"])
        self.log("val_d_real_sign", logits.sign().mean(), on_epoch=True, batch_size=len(logits))

    def fid_samples(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """``(B, 3, resolution, resolution)`` EMA samples for :class:`~aras400k.callbacks.GeneratorFID`, B = batch size.

        Seeds start at ``FID_SEED_OFFSET + batch_idx * B``, so every validation uses the
        same latents and FID changes only with the generator.
        """
        n = len(batch["image"])
        return self.generate(n, seed=FID_SEED_OFFSET + batch_idx * n)

    def draw_sample_grid(self, path: Path, batch: Mapping[str, Any] | None = None) -> bool:
        """Write ``sample_seeds`` EMA samples (seeds 0, 1, ...) to the PNG ``path``, a grid under a title band.

        ``batch`` is unused (the samples depend on their seeds only); returns True.
        """
        count = int(self.hparams["sample_seeds"])
        images = self.generate(count, seed=0)
        it = int(self.iterations)
        shown = f", {it * self.last_batch_size / 1000:.2f} kimg" if self.last_batch_size else ""
        title = f"StyleGAN EMA samples, seeds 0-{count - 1}, iteration {it}{shown}"
        nrow = max(1, math.ceil(math.sqrt(len(images))))
        grid = make_grid(images.float().cpu().add(1).div(2).clamp(0, 1), nrow=nrow, padding=1, pad_value=1.0)
        picture = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        # A white band above the grid with the title.
        font = _title_font()
        width = int(ImageDraw.Draw(picture).textlength(title, font=font)) + 8
        titled = Image.new("RGB", (max(picture.width, width), picture.height + _TITLE_BAND), "white")
        titled.paste(picture, (0, _TITLE_BAND))
        ImageDraw.Draw(titled).text((4, 3), title, fill="black", font=font)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, tmp_name=f"{path.name}.tmp.png") as tmp:
            titled.save(tmp)
        return True


#: Height in pixels of the title band above a sample grid.
_TITLE_BAND = 20


def _title_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font at 13 px (at its default 10 px the spaces between words all but vanish).

    Pillow builds without FreeType (or before 10.1) have only the bitmap font, whose
    spaces are fine.
    """
    try:
        return ImageFont.load_default(size=13)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _check_arguments(hp: Mapping[str, Any]) -> None:
    """Fail early, naming the argument and the valid choices."""
    if hp.get("kimg") is not None and not hp["kimg"] > 0:
        raise ValueError(f"kimg must be > 0 (thousands of real images to train on) or null, got {hp['kimg']}")
    check_choice("cfg", hp["cfg"], CONFIGS)
    check_choice("aug", hp["aug"], _AUG_MODES)
    if hp["resolution"] < 4 or hp["resolution"] & (hp["resolution"] - 1):
        raise ValueError(f"resolution must be a power of two >= 4, got {hp['resolution']}")
    check_at_least("gamma", hp["gamma"], 0)
    check_at_least("r1_interval", hp["r1_interval"], 1)
    if hp["batch"] is not None and hp["batch"] < 1:
        raise ValueError(f"batch must be positive or null, got {hp['batch']}")
    if hp["sample_seeds"] < 1 or hp["sample_every_n_steps"] < 0:
        raise ValueError("sample_seeds must be >= 1 and sample_every_n_steps >= 0")
