import math

import numpy as np
import pytest
import torch

from aras400k.classes import CLASS_NAMES
from aras400k.metrics.consistency import CompositionConsistency, Lexicon, score_caption
from tests.metrics.test_redundancy import sync_as_ranks

# A worked example: tree 41.2%, crop 30.5%, grass 20%, built 4.3%, water 4%.
COMP = {"tree": 0.412, "shrub": 0.0, "grass": 0.2, "crop": 0.305, "built": 0.043, "barren": 0.0, "water": 0.04}


@pytest.mark.parametrize(
    ("caption", "mentioned", "negated", "stated"),
    [
        ("Tree 41.2%, crop 30.5%.", {"tree", "crop"}, set(), [("tree", 41.2), ("crop", 30.5)]),
        ("tree 41.2% crop 30.5%", {"tree", "crop"}, set(), [("tree", 41.2), ("crop", 30.5)]),  # tie -> before
        ("41% forest and 30% cropland", {"tree", "crop"}, set(), [("tree", 41.0), ("crop", 30.0)]),
        ("Forest covers about 40% of the scene", {"tree"}, set(), [("tree", 40.0)]),
        ("Woodland (38 percent) beside agricultural fields", {"tree", "crop"}, set(), [("tree", 38.0)]),
        ("Dense forests, no water.", {"tree"}, {"water"}, []),
        ("There is no visible water or buildings", set(), {"water", "built"}, []),
        ("A non-forest area without any built-up land", set(), {"tree", "built"}, []),
        ("No lake, but a river runs through meadows", {"water", "grass"}, set(), []),  # positive elsewhere
        ("Seasonal treeless farmland 120%", {"crop"}, set(), []),  # whole words only; >100% ignored
        ("Cloud cover 5%, then forest", {"tree"}, set(), []),  # a percentage needs a mention in its clause
    ],
)
def test_parse_hand_worked(caption, mentioned, negated, stated):
    parsed = Lexicon().parse(caption)
    assert parsed.mentioned == mentioned
    assert parsed.negated == negated
    assert list(parsed.stated) == stated


def test_negation_can_be_turned_off():
    assert Lexicon(negation=False).parse("no water").mentioned == {"water"}


def test_score_caption_hand_worked():
    # salient (>= 5%): tree, grass, crop; mentioned: tree, crop, water (water 4% is present).
    check = score_caption("Tree 41.2%, crop 30%, and a river.", COMP)
    assert check.recall == pytest.approx(2 / 3)
    assert check.precision == 1.0
    assert check.percent_mae == pytest.approx((0.0 + 0.5) / 2)
    # A mentioned absent class costs precision; no mention leaves precision undefined.
    assert score_caption("forest and desert", COMP).precision == 0.5
    assert math.isnan(score_caption("a satellite image", COMP).precision)
    # Raising present_share turns built (4.3%) absent.
    assert score_caption("a town", COMP, present_share=0.05).precision == 0.0


def test_metric_means_and_groups_match_hand_computation():
    captions = [
        "Tree 41.2%, crop 30%, and a river.",  # recall 2/3, precision 1, mae 0.25
        "forest and desert",  # recall 1/3, precision 1/2, no percentages
        "a satellite image",  # recall 0, precision undefined
        "grassland 25%, trees 45%, crops 30%",  # recall 1, precision 1, mae (5 + 3.8 + 0.5) / 3
    ]
    metric = CompositionConsistency()
    metric.update(captions[:2], [COMP, COMP], groups=["a/text", "b/vision"])
    metric.update(captions[2:], [COMP, COMP], groups=["b/vision", "a/text"])
    result = metric.compute()
    assert result["recall"].item() == pytest.approx((2 / 3 + 1 / 3 + 0 + 1) / 4)
    assert result["precision"].item() == pytest.approx((1 + 0.5 + 1) / 3)
    assert result["percent_mae"].item() == pytest.approx((0.25 + 9.3 / 3) / 2)
    counts = [result[k].item() for k in ("captions", "with_salient", "with_mentions", "with_percentages")]
    assert counts == [4, 4, 3, 2]
    groups = result["groups"]
    assert list(groups) == ["a/text", "b/vision"]
    assert groups["a/text"]["recall"] == pytest.approx((2 / 3 + 1) / 2)
    assert groups["a/text"]["percent_mae"] == pytest.approx((0.25 + 9.3 / 3) / 2)
    assert groups["b/vision"]["precision"] == 0.5 and math.isnan(groups["b/vision"]["percent_mae"])


def test_array_compositions_equal_mappings_and_custom_lexicon():
    captions = ["a lake in a forest", "bare ground"]
    comps = [COMP, {"barren": 0.9, "water": 0.1}]
    array = torch.tensor([[c.get(n, 0.0) for n in CLASS_NAMES] for c in comps])
    a, b = CompositionConsistency(), CompositionConsistency()
    a.update(captions, comps)
    b.update(captions, array)
    for key in ("recall", "precision"):
        assert a.compute()[key].item() == pytest.approx(b.compute()[key].item())
    custom = CompositionConsistency(lexicon={"barren": ["bare ground"], "water": ["lake"]}, salient_share=0.5)
    custom.update(captions, np.asarray(array))
    result = custom.compute()  # salient: none in COMP (tree 41%) -> undefined; barren in the second -> 1
    assert result["with_salient"].item() == 1 and result["recall"].item() == 1.0
    assert result["precision"].item() == pytest.approx((1 + 1) / 2)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_ranks_gather_equals_single_process():
    captions = ["tree 40%", "a lake", "forest and farmland", "urban area, 20% water"]
    comps = [{"tree": 0.5, "water": 0.5}, {"water": 1.0}, {"tree": 0.7, "crop": 0.3}, {"built": 0.6, "water": 0.4}]
    groups = ["m/x", "m/y", "m/x", "n/z"]
    single = CompositionConsistency()
    single.update(captions, comps, groups)
    ranks = [CompositionConsistency() for _ in range(3)]
    ranks[0].update(captions[:1], comps[:1], groups[:1])
    ranks[1].update(captions[1:], comps[1:], groups[1:])  # rank 2 sees nothing
    sync_as_ranks(ranks)
    expected = single.compute()
    for metric in ranks:
        result = metric.compute()
        assert list(result["groups"]) == ["m/x", "m/y", "n/z"]
        for name, values in expected["groups"].items():
            assert result["groups"][name] == pytest.approx(values, nan_ok=True)
        for key in ("recall", "precision", "percent_mae", "captions"):
            assert result[key].item() == pytest.approx(expected[key].item())


def test_errors():
    with pytest.raises(ValueError, match="are not class names"):
        CompositionConsistency(lexicon={"forest": ["forest"]})
    with pytest.raises(ValueError, match="listed for 'tree' and 'shrub'"):
        Lexicon({"tree": ["bush"], "shrub": ["bush"]})
    with pytest.raises(ValueError, match="fraction in"):
        CompositionConsistency(salient_share=5)
    metric = CompositionConsistency()
    with pytest.raises(ValueError, match="fractions in"):
        metric.update(["forest"], [{"tree": 41.2}])
    with pytest.raises(ValueError, match="2 captions but 1 compositions"):
        metric.update(["a", "b"], [COMP])
    with pytest.raises(ValueError, match="one group name per caption"):
        metric.update(["a"], [COMP], groups="a/b")
    with pytest.raises(ValueError, match="at most 128"):
        metric.update(["a"], [COMP], groups=["x" * 200])
