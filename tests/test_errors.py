"""The argument checks of :mod:`aras400k.errors`: one message shape for every command."""

import pytest

from aras400k.errors import check_at_least, check_choice, check_positive, check_within


def test_check_at_least_names_the_argument_the_minimum_and_the_value():
    check_at_least("batch_size", 1, 1)
    check_at_least("tile_size", 16.5, 16)
    with pytest.raises(ValueError, match=r"^batch_size must be >= 1, got 0$"):
        check_at_least("batch_size", 0, 1)
    with pytest.raises(ValueError, match=r"^max_retries must be >= 0, got -1$"):
        check_at_least("max_retries", -1, 0)


def test_check_within_closes_both_ends():
    for value in (0.0, 0.5, 1.0):
        check_within("alpha", value)
    check_within("slope", -2.0, -2.0, 3.0)
    with pytest.raises(ValueError, match=r"^alpha must be within \[0, 1\], got 1.5$"):
        check_within("alpha", 1.5)
    with pytest.raises(ValueError, match=r"^slope must be within \[-2, 3\], got 3.25$"):
        check_within("slope", 3.25, -2.0, 3.0)


def test_check_positive_refuses_zero():
    check_positive("ada_kimg", 1e-9)
    with pytest.raises(ValueError, match=r"^ada_kimg must be positive, got 0$"):
        check_positive("ada_kimg", 0)


def test_check_choice_lists_the_choices_of_any_iterable():
    check_choice("conditioning", "oasis", ("unetgan", "oasis"))
    check_choice("augmentation pipe", "bgc", {"blit": 0, "bgc": 1})
    with pytest.raises(ValueError, match=r"^unknown conditioning 'x'; choose one of \['unetgan', 'oasis'\]$"):
        check_choice("conditioning", "x", ("unetgan", "oasis"))


def test_constructors_give_the_shared_messages():
    from aras400k.captioning.backends import TemplateBackend
    from aras400k.models.gan.augment import AdaptiveAugment, JointFlipRot90
    from aras400k.models.spade.discriminator import UNetDiscriminator

    assert TemplateBackend(max_classes=2).max_classes == 2
    with pytest.raises(ValueError, match="max_classes must be >= 1, got 0"):
        TemplateBackend(max_classes=0)
    with pytest.raises(ValueError, match="unknown augmentation pipe 'rgb'"):
        AdaptiveAugment(pipe="rgb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fixed_p must be within"):
        AdaptiveAugment(fixed_p=1.5)
    with pytest.raises(ValueError, match="ada_kimg must be positive"):
        AdaptiveAugment(ada_kimg=0)
    with pytest.raises(ValueError, match="p_rot90 must be within"):
        JointFlipRot90(p_rot90=-0.1)
    with pytest.raises(ValueError, match="num_downsamplings must be >= 1, got 0"):
        UNetDiscriminator(num_downsamplings=0)
