import math

import pytest
import torch
from torch import nn

from aras400k.models.spade import (
    VGG19_LAYER_WEIGHTS,
    PerceptualLoss,
    SegmenterEncoderFeatures,
    UNetAdversarialLoss,
    UNetDiscriminatorOutput,
    VGG19Features,
    class_balancing_weights,
    consistency_loss,
    consistency_weight,
    cutmix_augmentation_loss,
    cutmix_mask,
    cutmix_probability,
    feature_matching_loss,
    is_degenerate_mix,
    kl_divergence,
    labelmix_mask,
    mix,
    n_plus_one_loss,
    one_hot_mask,
)
from tests.models.spade.conftest import NUM_CLASSES, block_mask, tiny_discriminator, tiny_generator

# -- adversarial -----------------------------------------------------------------------------


def _output(global_logits, pixel_logits):
    return UNetDiscriminatorOutput(torch.tensor(global_logits), torch.tensor(pixel_logits).view(1, 1, 1, -1), [])


def test_hinge_losses_on_both_heads_against_hand_computed_values():
    loss = UNetAdversarialLoss("hinge", "unetgan", global_weight=1.0, pixel_weight=2.0)
    mask = torch.zeros(1, NUM_CLASSES, 1, 3)
    real = _output([0.5, 2.0], [0.5, 2.0, -1.0])  # relu(1 - x): 0.5, 0 | 0.5, 0, 2
    fake = _output([-2.0, 0.5], [-2.0, 0.0, 0.5])  # relu(1 + x): 0, 1.5 | 0, 1, 1.5
    d = loss.discriminator_loss(real, fake, mask)
    assert d.image.item() == pytest.approx(0.25 + 0.75)
    assert d.pixel.item() == pytest.approx(2 * (2.5 / 3 + 2.5 / 3))
    g = loss.generator_loss(fake, mask)  # -mean(D(fake))
    assert (g.image.item(), g.pixel.item()) == pytest.approx((0.75, 2 * 0.5))
    assert g.total.item() == pytest.approx(0.75 + 1.0)


def test_non_saturating_losses_on_both_heads_against_hand_computed_values():
    loss = UNetAdversarialLoss("logistic", "unetgan")
    mask = torch.zeros(1, NUM_CLASSES, 1, 2)
    log3 = math.log(3.0)
    real = _output([log3], [0.0, log3])  # -log sigmoid(x): log 4/3 | log 2, log 4/3
    fake = _output([-log3], [0.0, -log3])  # -log(1 - sigmoid(x)): log 4/3 | log 2, log 4/3
    d = loss.discriminator_loss(real, fake, mask)
    assert d.image.item() == pytest.approx(2 * math.log(4 / 3))
    assert d.pixel.item() == pytest.approx(math.log(2) + math.log(4 / 3))
    g = loss.generator_loss(real, mask)  # generated images the discriminator calls real: -log sigmoid
    assert (g.image.item(), g.pixel.item()) == pytest.approx((math.log(4 / 3), (math.log(2) + math.log(4 / 3)) / 2))
    with pytest.raises(ValueError, match="choose one of"):
        UNetAdversarialLoss("wasserstein")
    with pytest.raises(ValueError, match="choose one of"):
        UNetAdversarialLoss("hinge", "patchgan")


def test_class_balancing_weights_against_a_hand_computed_example():
    # 2x2 mask, classes [0, 0, 0, 1]: 4 pixels, 2 present classes -> w = 4 / (2 * count)
    onehot = one_hot_mask(torch.tensor([[[0, 0], [0, 1]]]), 3)
    assert class_balancing_weights(onehot).tolist() == pytest.approx([4 / 6, 2.0, 0.0])
    # one pixel ignored: counts [2, 1, 0], still 4 pixels in P (as OASIS)
    onehot = one_hot_mask(torch.tensor([[[0, 0], [255, 1]]]), 3)
    assert class_balancing_weights(onehot).tolist() == pytest.approx([1.0, 2.0, 0.0])


def test_n_plus_one_loss_against_hand_computed_values():
    onehot = one_hot_mask(torch.tensor([[[0, 0], [0, 1]]]), 3)
    logits = torch.zeros(1, 4, 2, 2)  # every pixel's cross-entropy is log 4
    assert n_plus_one_loss(logits, onehot, True).item() == pytest.approx(math.log(4))
    assert n_plus_one_loss(logits, onehot, False).item() == pytest.approx(math.log(4))
    logits[0, 0] = 10.0  # confident "class 0" everywhere: right on 3 pixels, wrong on the class-1 pixel
    per_pixel = torch.nn.functional.cross_entropy(logits, torch.tensor([[[0, 0], [0, 1]]]), reduction="none")[0]
    class_mean = [per_pixel[per_pixel.new_tensor([[1, 1], [1, 0]]).bool()].mean(), per_pixel[1, 1]]
    balanced = n_plus_one_loss(logits, onehot, True)
    assert balanced.item() == pytest.approx(sum(class_mean).item() / 2)  # mean over present classes
    assert n_plus_one_loss(logits, onehot, True, class_balancing=False).item() == pytest.approx(per_pixel.mean().item())
    fake_target = torch.full((1, 2, 2), 3)
    assert n_plus_one_loss(logits, onehot, False).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, fake_target).item()
    )
    with pytest.raises(ValueError, match="must be"):
        n_plus_one_loss(torch.zeros(1, 3, 2, 2), onehot, True)


@pytest.mark.parametrize("conditioning", ["oasis", "unetgan"])
@pytest.mark.parametrize("kind", ["hinge", "logistic"])
def test_unet_adversarial_loss_trains_both_networks(onehot, conditioning, kind):
    torch.manual_seed(0)
    generator, discriminator = tiny_generator(), tiny_discriminator(conditioning=conditioning)
    loss = UNetAdversarialLoss(kind, conditioning)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = generator(onehot)
    d_terms = loss.discriminator_loss(discriminator(real, onehot), discriminator(fake.detach(), onehot), onehot)
    assert torch.isfinite(d_terms.total)
    d_terms.total.backward()
    assert all(p.grad is None for p in generator.parameters())
    discriminator.zero_grad()
    g_terms = loss.generator_loss(discriminator(fake, onehot), onehot)
    assert g_terms.total.item() == pytest.approx(g_terms.image.item() + g_terms.pixel.item())
    g_terms.total.backward()
    assert generator.blocks[-1].conv_1.parametrizations.weight.original.grad.abs().sum() > 0


# -- CutMix, LabelMix, consistency -----------------------------------------------------------


def _is_rectangle(region: torch.Tensor) -> bool:
    rows, cols = region.any(1).nonzero(), region.any(0).nonzero()
    return bool(region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all())


def test_cutmix_masks_are_binary_boxes_with_both_real_and_fake_pixels():
    masks = cutmix_mask(64, 32, 32, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (64, 1, 32, 32)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert not is_degenerate_mix(masks).any()
    fractions = masks.mean(dim=(1, 2, 3))
    assert fractions.min() < 0.3 and fractions.max() > 0.7  # box sizes vary; real inside or outside
    for m in masks[:16, 0]:  # one of the two values fills an axis-aligned rectangle
        assert any(_is_rectangle(m == value) for value in (0.0, 1.0))
    assert torch.equal(masks, cutmix_mask(64, 32, 32, generator=torch.Generator().manual_seed(0)))


def test_labelmix_follows_class_regions():
    onehot = one_hot_mask(block_mask(32, batch=16), NUM_CLASSES)
    masks = labelmix_mask(onehot, torch.Generator().manual_seed(0))
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert not is_degenerate_mix(masks).any()
    for m in masks[:, 0]:
        quadrants = [m[:16, :16], m[:16, 16:], m[16:, :16], m[16:, 16:]]
        values = {q.unique().numel() for q in quadrants}
        # a class-subset mix is constant per quadrant; a CutMix fallback cuts across quadrants
        assert values == {1} or any(q.unique().numel() == 2 for q in quadrants)


def test_labelmix_falls_back_to_cutmix_on_a_degenerate_mask():
    single_class = one_hot_mask(torch.full((8, 32, 32), 3), NUM_CLASSES)  # any subset is all or nothing
    masks = labelmix_mask(single_class, torch.Generator().manual_seed(0))
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert not is_degenerate_mix(masks).any()
    assert is_degenerate_mix(torch.ones(2, 1, 4, 4)).all() and is_degenerate_mix(torch.zeros(2, 1, 4, 4)).all()


def test_mix_takes_real_where_the_mask_is_one():
    real, fake = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    m = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert torch.equal(mix(real, fake, m), m.expand(1, 3, 2, 2))


def _consistency(decoder: nn.Module, mix_mask: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1)
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    return consistency_loss(decoder(mix(real, fake, mix_mask)), decoder(real), decoder(fake), mix_mask)


def test_consistency_loss_is_zero_for_a_mix_equivariant_decoder():
    torch.manual_seed(0)
    per_pixel = nn.Sequential(nn.Conv2d(3, 8, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, NUM_CLASSES + 1, 1))
    masks = cutmix_mask(4, 32, 32, generator=torch.Generator().manual_seed(0))
    assert _consistency(per_pixel, masks).item() < 1e-12


def test_consistency_loss_is_positive_when_the_decoder_mixes_pixels():
    torch.manual_seed(0)
    masks = cutmix_mask(4, 32, 32, generator=torch.Generator().manual_seed(0))
    assert _consistency(nn.Conv2d(3, 1, 3, padding=1), masks).item() > 1e-4
    discriminator = tiny_discriminator(projection=False)
    assert _consistency(lambda x: discriminator(x).pixel_logits, masks).item() > 1e-6


def test_consistency_warm_up_is_a_linear_ramp():
    assert [consistency_weight(s, 100) for s in (0, 25, 100, 500)] == [0.0, 0.25, 1.0, 1.0]
    assert consistency_weight(50, 100, max_weight=4.0) == 2.0
    assert consistency_weight(0, 0) == 1.0  # no warm-up
    assert [cutmix_probability(s, 10) for s in (0, 5, 10, 20)] == [0.0, 0.25, 0.5, 0.5]


def test_cutmix_augmentation_loss_targets_the_mask():
    m = torch.tensor([[[[1.0, 0.0]]]])
    perfect = torch.tensor([[[[5.0, -5.0]]]])  # real pixel called real, fake pixel called fake
    assert cutmix_augmentation_loss(perfect, torch.tensor([-5.0]), m, "hinge").item() == 0.0
    assert cutmix_augmentation_loss(-perfect, torch.tensor([5.0]), m, "hinge").item() == pytest.approx(6 + 6)
    with pytest.raises(ValueError, match="one logit per pixel"):
        cutmix_augmentation_loss(torch.zeros(1, 8, 1, 2), torch.zeros(1), m)


# -- feature matching, KL, perceptual -----------------------------------------------------------


def test_feature_matching_is_zero_for_identical_features_and_l1_otherwise():
    features = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    assert feature_matching_loss(features, [f.clone() for f in features]).item() == 0.0
    shifted = [f + 0.5 for f in features]
    assert feature_matching_loss(shifted, features).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="as many"):
        feature_matching_loss(features, features[:1])


def test_kl_divergence_against_the_closed_form():
    mu = torch.tensor([[1.0, 0.0], [0.5, -2.0]])
    var = torch.tensor([[1.0, 2.0], [0.5, 3.0]])
    closed = 0.5 * (var + mu**2 - 1 - var.log())  # KL(N(mu, var) || N(0, 1)) per dimension
    assert kl_divergence(mu, var.log()).item() == pytest.approx(closed.sum().item())
    assert kl_divergence(mu, var.log(), "batchmean").item() == pytest.approx(closed.sum().item() / 2)
    assert kl_divergence(mu, var.log(), "mean").item() == pytest.approx(closed.mean().item())
    torch_kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, var.sqrt()), torch.distributions.Normal(0.0, 1.0)
    )
    assert kl_divergence(mu, var.log()).item() == pytest.approx(torch_kl.sum().item())
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_vgg19_features_need_a_local_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pth does not exist.*local torchvision vgg19"):
        VGG19Features(tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not hold torchvision VGG19 weights"):
        VGG19Features(tmp_path / "bad.pth")


@pytest.mark.slow
def test_vgg19_features_from_a_local_file(tmp_path):
    from torchvision.models import vgg19

    state = {f"features.{k}": v for k, v in vgg19(weights=None).features.state_dict().items()}
    torch.save(state, tmp_path / "vgg19_features.pth")
    loss = PerceptualLoss(VGG19Features(tmp_path / "vgg19_features.pth"), VGG19_LAYER_WEIGHTS)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    assert [f.shape[1] for f in loss.feature_net(images)] == [64, 128, 256, 512, 512]
    assert loss(images, images).item() == 0.0
    assert loss(images.flip(-1), images).item() > 0


def test_perceptual_loss_with_a_segmenter_encoder():
    from aras400k.models import SegmentationTask

    torch.manual_seed(0)
    task = SegmentationTask(arch="fpn", encoder="resnet18")
    loss = PerceptualLoss(SegmenterEncoderFeatures(task, mean=(0.3, 0.4, 0.5), std=(0.2, 0.2, 0.2)))
    loss.train()
    assert not loss.feature_net.training  # frozen batch-norm statistics even in training mode
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    features = loss.feature_net(real)
    assert [f.shape[-1] for f in features] == [16, 8, 4, 2, 1]
    assert loss(real, real).item() == 0.0
    fake = (real.flip(-1) * 0.5).requires_grad_(True)
    value = loss(fake, real)
    assert value.item() > 0
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in task.model.encoder.parameters())
    with pytest.raises(ValueError, match="2 layer weights for 5 feature maps"):
        PerceptualLoss(loss.feature_net, [1.0, 1.0])(fake, real)


def test_segmenter_features_normalise_as_the_task_was_trained():
    from aras400k.models import SegmentationTask

    task = SegmentationTask(arch="fpn", encoder="resnet18").eval()
    features = SegmenterEncoderFeatures(task, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), stages=[-1])
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    normalised = ((images + 1) / 2 - 0.5) / 0.25
    (deepest,) = features(images)
    assert torch.allclose(deepest, task.model.encoder(normalised)[-1])
