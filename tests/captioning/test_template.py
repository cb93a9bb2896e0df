import re
import time

import numpy as np
import pytest

from aras400k.captioning import CaptionRequest, TemplateBackend
from aras400k.captioning.backends.template import image_tone
from aras400k.captioning.spatial import class_layouts, location_code, location_phrases

COMP = {"tree": 0.412, "shrub": 0.0, "grass": 0.05, "crop": 0.305, "built": 0.0, "barren": 0.0, "water": 0.233}


def _mask() -> np.ndarray:
    """Crop everywhere, water in the north-east corner, a tree strip along the southern edge."""
    mask = np.full((64, 64), 3, np.uint8)
    mask[:20, 44:] = 6
    mask[56:, :] = 0
    return mask


def _request(mode: str, seed: int = 1, **kw) -> CaptionRequest:
    kw.setdefault("composition", COMP)
    return CaptionRequest("", "", seed=seed, mode=mode, key="k", **kw)


def test_location_codes_follow_the_mask():
    layouts = {lay.name: lay for lay in class_layouts(_mask())}
    assert layouts["water"].location == "at:north-east"
    assert layouts["tree"].location == "edge:south"
    assert list(layouts) == ["crop", "tree", "water"]  # largest share first
    left_half = np.zeros((32, 32), np.uint8)
    left_half[:, 16:] = 2
    assert {lay.name: lay.location for lay in class_layouts(left_half)} == {"tree": "half:west", "grass": "half:east"}
    assert location_code(0.9, (0.5, 0.5), (0.08, 0.08)) == "whole"
    assert location_code(0.3, (0.5, 0.5), (0.08, 0.08)) == "scattered"
    assert location_code(0.1, (0.5, 0.5), (0.005, 0.005)) == "at:centre"
    assert "in the north-east" in location_phrases("at:north-east")
    assert class_layouts(np.full((8, 8), 255, np.uint8)) == []
    with pytest.raises(ValueError, match="unknown layout code"):
        location_phrases("nowhere")


def test_text_mode_lists_classes_by_share_with_percentages_and_no_places():
    backend = TemplateBackend()
    texts = backend.generate([_request("text", seed=s, mask=_mask()) for s in range(30)])
    for text in texts:
        positions = [text.index(p) for p in ("41.2%", "30.5%", "23.3%")]
        assert positions == sorted(positions), text
        assert "0.0%" not in text and "shrub" not in text
        assert not re.search(r"north|south|east|west|centre", text), text
    assert len(set(texts)) >= 25  # varied phrasings


def test_vision_mode_has_places_and_no_numbers_hybrid_has_both():
    backend = TemplateBackend()
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 1] = 120
    vision = backend.generate([_request("vision", seed=s, mask=_mask(), image=image) for s in range(20)])
    hybrid = backend.generate([_request("hybrid", seed=s, mask=_mask(), image=image) for s in range(20)])
    for text in vision:
        assert not re.search(r"\d", text), text
    assert sum("north-east" in t or "north-eastern" in t for t in vision) >= 10
    assert sum("south" in t for t in vision) >= 10
    for text in hybrid:
        assert "41.2%" in text and re.search(r"north|south|east|west|centre|across|scattered|throughout", text)
    assert any("green" in t for t in vision)


def test_deterministic_by_seed_and_vision_without_mask():
    backend = TemplateBackend()
    first = backend.generate([_request(m, seed=7) for m in ("text", "vision", "hybrid")])
    again = TemplateBackend().generate([_request(m, seed=7) for m in ("text", "vision", "hybrid")])
    assert first == again
    assert len(set(backend.generate([_request("text", seed=s) for s in range(10)]))) > 5
    only_image = backend.generate([_request("vision", composition=None, image=np.full((16, 16, 3), 200, np.uint8))])
    assert only_image[0] and not re.search(r"\d", only_image[0])
    assert TemplateBackend(spatial_hints=False).generate([_request("hybrid", mask=_mask())])[0]
    assert image_tone(np.full((16, 16, 3), 30, np.uint8))[:2] == ("dark", "grey")


def test_template_backend_is_fast():
    backend = TemplateBackend()
    mask = _mask()
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    requests = [_request(m, seed=s, mask=mask, image=image) for m in ("text", "vision", "hybrid") for s in range(700)]
    start = time.perf_counter()
    texts = backend.generate(requests)
    elapsed = time.perf_counter() - start
    assert len(texts) == 2100
    assert elapsed < 5.0, f"{2100 / elapsed:.0f} captions/s"


def test_the_backend_is_a_dataclass_whose_model_name_is_recorded():
    from dataclasses import fields

    backend = TemplateBackend(max_classes=3, model_name="template-v2")
    assert backend.model_name == "template-v2" and backend.max_classes == 3
    assert [f.name for f in fields(TemplateBackend)] == [
        "spatial_hints", "image_tones", "max_classes", "min_named_share", "model_name",
    ]  # fmt: skip
    assert backend != TemplateBackend(max_classes=3, model_name="template-v2")  # compared by identity, as before
