import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from aras400k.metrics.clipscore import CLIPScore, load_clip

transformers = pytest.importorskip("transformers")

CAPTIONS = [
    "tree 41.2%, crop 30.5%",
    "a river crosses farmland",
    "dense forest with a small lake",
    "urban area next to the sea",
    "bare rock and sand",
]


def build_tiny_clip(path: Path) -> Path:
    """A random CLIP (hidden 32, 1 layer, 32 px images, patch 8) with a character-level byte BPE tokenizer."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(c + "</w>" for c in alphabet)]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    images = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    text.update({"num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1})
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision.update({"image_size": 32, "patch_size": 8})
    config = transformers.CLIPConfig(text_config={**text, "pad_token_id": 1}, vision_config=vision, projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(path)
    transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def reference(tiny_clip):
    """The same model and processor, loaded independently of the metric."""
    model = transformers.CLIPModel.from_pretrained(tiny_clip, local_files_only=True).eval()
    processor = transformers.CLIPProcessor.from_pretrained(tiny_clip, local_files_only=True)
    return model, processor


def images(n, seed=0, size=40):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _tensor(output):
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def by_hand(reference, pictures, captions, input_ids=None):
    """100 * max(cos, 0) from the model's own get_text_features / get_image_features."""
    model, processor = reference
    with torch.no_grad():
        pixels = processor.image_processor(images=list(pictures), return_tensors="pt")["pixel_values"]
        image = _tensor(model.get_image_features(pixel_values=pixels))
        if input_ids is None:
            tokens = processor.tokenizer(list(captions), padding=True, return_tensors="pt")
            text = _tensor(model.get_text_features(**tokens))
        else:
            text = _tensor(model.get_text_features(input_ids=input_ids))
    cos = torch.nn.functional.cosine_similarity(text, image, dim=-1).double()
    return 100 * cos.clamp(min=0)


def test_matches_cosine_of_model_features_by_hand(tiny_clip, reference):
    pictures = images(5)
    metric = CLIPScore(tiny_clip, batch_size=2)  # several forward passes per update
    metric.update(pictures[:3], CAPTIONS[:3])
    metric.update(pictures[3:], CAPTIONS[3:])
    expected = by_hand(reference, pictures, CAPTIONS)
    assert (expected == 0).any() and (expected > 0).any()  # the random model gives both signs of cosine
    scores, truncated = metric.per_caption(pictures, CAPTIONS)
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=0)
    result = metric.compute()
    assert result["clip_score"].item() == pytest.approx(expected.mean().item(), abs=1e-4)
    assert result["captions"] == 5 and result["truncated"] == 0 and not truncated.any()
    assert result["groups"] == {}


def test_equals_torchmetrics_formula_on_same_model(tiny_clip, reference):
    from torchmetrics.multimodal import CLIPScore as TorchmetricsCLIPScore

    class FeaturesAsTensors(torch.nn.Module):
        """torchmetrics 1.9 expects tensors from get_*_features; transformers 5 returns model outputs."""

        def __init__(self, model):
            super().__init__()
            self.model, self.config = model, model.config

        def get_image_features(self, *args, **kwargs):
            return _tensor(self.model.get_image_features(*args, **kwargs))

        def get_text_features(self, *args, **kwargs):
            return _tensor(self.model.get_text_features(*args, **kwargs))

    model, processor = reference
    theirs = TorchmetricsCLIPScore(model_name_or_path=lambda: (FeaturesAsTensors(model), processor))
    pictures = images(5, seed=1)
    ours = CLIPScore(tiny_clip)
    scores, _ = ours.per_caption(pictures, CAPTIONS)
    # torchmetrics clamps the mean, so compare one caption at a time (each is max(100 cos, 0)).
    for i, caption in enumerate(CAPTIONS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = theirs(pictures[i : i + 1], [caption])
        assert scores[i].item() == pytest.approx(expected.item(), abs=1e-4)


def test_long_captions_are_truncated_counted_and_warned_once(tiny_clip, reference):
    long = "forest " * 20  # the character-level tokenizer makes this 140 tokens + 2 special
    metric = CLIPScore(tiny_clip)
    pictures = images(4, seed=2)
    with pytest.warns(UserWarning, match="truncated") as record:
        metric.update(pictures[:2], [long, CAPTIONS[0]])
        metric.update(pictures[2:], [CAPTIONS[1], long + "lake"])
    assert len([w for w in record if "truncated" in str(w.message)]) == 1
    result = metric.compute()
    assert result["truncated"] == 2 and result["captions"] == 4
    # The tokenizer keeps the end token: BOS + the first 75 content tokens + EOS.
    ids = reference[1].tokenizer([long])["input_ids"][0]
    assert len(ids) > 77
    cut = torch.tensor([[*ids[:76], ids[-1]]])
    embedding, truncated = metric.text_features([long])
    assert truncated.tolist() == [True]
    with torch.no_grad():
        expected = _tensor(reference[0].get_text_features(input_ids=cut))
    torch.testing.assert_close(embedding, torch.nn.functional.normalize(expected, dim=-1), atol=1e-5, rtol=0)
    scores, _ = metric.per_caption(pictures[:1], [long])
    torch.testing.assert_close(scores, by_hand(reference, pictures[:1], [long], input_ids=cut), atol=1e-4, rtol=0)


def test_groups_image_index_and_image_formats(tiny_clip, reference):
    pictures = images(2, seed=3)
    captions = ["a lake", "a city", "a forest", "farmland"]
    index = [0, 0, 1, 1]
    groups = ["m1/text", "m2/vision", "m1/text", "m2/vision"]
    metric = CLIPScore(tiny_clip)
    metric.update(pictures, captions, groups=groups, image_index=index)
    expected = by_hand(reference, pictures[index], captions)
    result = metric.compute()
    assert result["clip_score"].item() == pytest.approx(expected.mean().item(), abs=1e-4)
    assert result["groups"]["m1/text"]["clip_score"] == pytest.approx(expected[[0, 2]].mean().item(), abs=1e-4)
    assert result["groups"]["m2/vision"]["captions"] == 2
    hwc = [p.permute(1, 2, 0).numpy() for p in pictures]
    as_float = pictures.float() / 255
    for other in (hwc, as_float):
        torch.testing.assert_close(metric.per_caption(other, captions, index)[0], expected, atol=1e-4, rtol=0)


def test_missing_or_incomplete_directory_names_what_to_pass(tmp_path, tiny_clip):
    with pytest.raises(FileNotFoundError, match="model_path .* does not exist; pass a directory"):
        CLIPScore(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_clip(tmp_path)
    with pytest.raises(ValueError, match="pass image_index"):
        CLIPScore(tiny_clip).update(images(2), ["one caption"])
    with pytest.raises(ValueError, match="float images must be in"):
        CLIPScore(tiny_clip).update(images(1).float(), ["x"])
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert np.isnan(CLIPScore(tiny_clip).compute()["clip_score"].item())


def test_each_caption_is_clamped_at_zero_before_the_mean(tiny_clip, monkeypatch):
    # Hand-worked: cosines 0.5 and -0.3 give scores 50 and 0, mean 25 (clamping the mean would give 10).
    metric = CLIPScore(tiny_clip)
    unit = torch.eye(2)
    text = torch.stack([torch.tensor([0.5, 0.75**0.5]), torch.tensor([-0.3, 0.91**0.5])])
    monkeypatch.setattr(metric, "image_features", lambda pictures: unit[[0, 0]])
    monkeypatch.setattr(metric, "text_features", lambda captions: (text, torch.zeros(2, dtype=torch.bool)))
    metric.update(images(2), ["a", "b"])
    assert metric.compute()["clip_score"].item() == pytest.approx(25.0)
