import pytest

from aras400k.captioning import DEFAULT_USER_PROMPTS, DuplicateFilter, normalize_caption, prompt_hash
from aras400k.captioning.prompts import check_user_prompt, render_composition, render_prompt


def test_composition_rendering_drops_absent_classes_and_orders_by_share():
    comp = {"tree": 0.412, "crop": 0.305, "water": 0.083, "built": 0.0, "grass": 0.2}
    assert render_composition(comp) == "tree 41.2%, crop 30.5%, grass 20.0%, water 8.3%"
    text = render_prompt(DEFAULT_USER_PROMPTS["text"], key="a", composition=comp)
    assert "tree 41.2%, crop 30.5%" in text and "built" not in text
    assert render_prompt("{dominant} in {key}", key="k1", composition=comp) == "tree in k1"


def test_prompt_checks():
    for mode, template in DEFAULT_USER_PROMPTS.items():
        assert check_user_prompt(template, mode) == template
    with pytest.raises(ValueError, match="hybrid"):
        check_user_prompt("Describe: {composition}", "vision")
    with pytest.raises(ValueError, match="unknown fields"):
        check_user_prompt("{nope}", "text")
    with pytest.raises(ValueError, match="mode must be one of"):
        check_user_prompt("x", "audio")
    with pytest.raises(ValueError, match="needs a composition"):
        render_prompt("{composition}", key="k")


def test_prompt_hash_is_stable_and_sensitive():
    assert prompt_hash("s", "u") == prompt_hash("s", "u")
    assert len(prompt_hash("s", "u")) == 16 and int(prompt_hash("s", "u"), 16) >= 0
    assert prompt_hash("s", "u") != prompt_hash("s", "u ") != prompt_hash("su", "")


def test_normalisation_and_duplicate_filter():
    assert normalize_caption("  Forest, 41.2%  and CROP!! ") == normalize_caption("forest 41.2% and crop")
    assert normalize_caption("water 41.2%") != normalize_caption("water 4.12%")
    normalised = DuplicateFilter("normalized", seen=["Forest in the north."])
    assert normalised.rejects("forest in the NORTH") and not normalised.rejects("forest in the south")
    exact = DuplicateFilter("exact", seen=["Forest in the north."])
    assert exact.rejects("Forest in the north.") and not exact.rejects("forest in the north.")
    off = DuplicateFilter("off", seen=["a b"])
    assert off.is_repeat("A, b.") and not off.rejects("A, b.")
    with pytest.raises(ValueError, match="dedupe must be one of"):
        DuplicateFilter("fuzzy")
