import numpy as np
import pytest

from aras400k.captioning import Captioner, CaptionRequest, SamplingSettings
from aras400k.captioning.backends.transformers import TransformersBackend

GREEDY = SamplingSettings(temperature=0.0, max_new_tokens=6)


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (32, 48, 64)]


def test_missing_model_folder_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*model_path.*nothing is downloaded"):
        TransformersBackend(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        TransformersBackend(str(tmp_path))


def test_text_mode_batched_through_the_causal_lm(tiny_lm):
    backend = TransformersBackend(str(tiny_lm))
    comps = [{"tree": 0.5, "crop": 0.5}, {"water": 1.0}, {"grass": 0.2, "built": 0.3, "barren": 0.5}, {"shrub": 1.0}]
    captioner = Captioner("text", backend, captions_per_image=2, batch_size=8, max_new_tokens=8, progress=False)
    out = captioner.caption(compositions=comps)
    assert [len(c) for c in out] == [2, 2, 2, 2] and captioner.stats.captions == 8
    assert captioner.model_name == "tiny-qwen2"
    # Left padding: a prompt gives the same greedy tokens alone and in a batch of longer prompts.
    prompts = ["tree", "tree 41.2%, crop 30.5%, water 8.3%, grass 1.0%", "Describe the scene."]
    requests = [CaptionRequest("sys", p, sampling=GREEDY) for p in prompts]
    batched = backend.generate(requests)
    assert batched == [backend.generate([r])[0] for r in requests]
    sampled = [CaptionRequest("sys", p, seed=5, sampling=SamplingSettings(max_new_tokens=6)) for p in prompts]
    assert backend.generate(sampled) == backend.generate(sampled)  # seeded per batch
    with pytest.raises(ValueError, match="image-text-to-text"):
        backend.generate([CaptionRequest("sys", "x", image=_images()[0])])


def test_vision_and_hybrid_batched_through_the_vlm(tiny_vlm):
    backend = TransformersBackend(str(tiny_vlm), dtype="float32", attn_implementation="eager")
    images = _images()
    comps = [{"tree": 0.7, "water": 0.3}, {"crop": 1.0}, {"built": 0.5, "grass": 0.5}]
    for mode in ("vision", "hybrid"):
        captioner = Captioner(mode, backend, captions_per_image=2, batch_size=6, max_new_tokens=6, progress=False)
        out = captioner.caption(images=images, compositions=comps)
        assert [len(c) for c in out] == [2, 2, 2]
    # Images of three sizes give three prompt lengths: batched equals one at a time.
    requests = [CaptionRequest("sys", "Describe.", image=im, sampling=GREEDY, mode="vision") for im in images]
    assert backend.generate(requests) == [backend.generate([r])[0] for r in requests]
    # A vision-language model also answers text-only requests (through its processor).
    assert len(backend.generate([CaptionRequest("sys", "tree 50.0%", sampling=GREEDY)])) == 1
