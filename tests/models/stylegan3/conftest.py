"""Fixtures of the StyleGAN tests."""

from __future__ import annotations

import pytest

from aras400k.models.stylegan3 import Generator

from .tiny import tiny_generator


@pytest.fixture(scope="module", params=["stylegan3-t", "stylegan3-r", "stylegan2"])
def generator(request: pytest.FixtureRequest) -> Generator:
    """One tiny generator per configuration, shared by a test module."""
    return tiny_generator(request.param)
