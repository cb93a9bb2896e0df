"""A custom prompt for ``Captioner``: tell the model where the patch is.

Real patches made by ``aras-data prepare`` record their Sentinel-2 tile in
``meta.json`` (``"tile": "N36E027"``: the 1 x 1 degree cell whose south-west corner is
36 N, 27 E). ``LocatedCaptioner`` adds that place to the user prompt, so a language
model can name the region and its typical landscape, and makes every caption end
with a full stop. It overrides two hooks and the prompt hash; everything else
(batching, deduplication, the resumable sidecar) is the parent's.

Use it from the command line with its module on ``PYTHONPATH``
(``aras-caption --captioner custom_prompt.LocatedCaptioner ...``), or from Python::

    captioner = LocatedCaptioner("hybrid", OpenAIBackend("Qwen/Qwen3-VL-8B-Instruct"))
    captioner.caption_shards("data/aras400k/train", "runs/captions/train.located.jsonl")
"""

from __future__ import annotations

import hashlib
import re

from aras400k.captioning import Captioner, CaptionInput, CaptionRequest

#: A Sentinel-2 / Copernicus DEM style tile id: latitude band then longitude band.
TILE_RE = re.compile(r"^(?P<ns>[NS])(?P<lat>\d{2})(?P<ew>[EW])(?P<lon>\d{3})$")

#: Appended to the user prompt when the tile is known.
LOCATION_TEMPLATE = " The patch lies in the 1-degree cell {lat_from}-{lat_to} {ns}, {lon_from}-{lon_to} {ew}."


def tile_location(tile: str) -> str | None:
    """Describe a tile id such as ``N36E027`` as a latitude/longitude cell.

    Args:
        tile: The ``tile`` field of a sample's ``meta.json``.

    Returns:
        The sentence to append to the prompt, or ``None`` if ``tile`` is not a tile id
        (the procedural demo set writes ``"DEMO"``).
    """
    match = TILE_RE.match(tile)
    if match is None:
        return None
    lat, lon = int(match["lat"]), int(match["lon"])
    return LOCATION_TEMPLATE.format(
        lat_from=lat, lat_to=lat + 1, ns=match["ns"], lon_from=lon, lon_to=lon + 1, ew=match["ew"]
    )


class LocatedCaptioner(Captioner):
    """A ``Captioner`` whose user prompt names the patch's location when its tile is known."""

    @property
    def prompt_hash(self) -> str:
        """The parent's hash of the prompt templates, extended with this class's template.

        The sidecar stores the hash and refuses to resume with another one, so captions
        made with and without the location never mix in one file.
        """
        extra = hashlib.sha256(LOCATION_TEMPLATE.encode()).hexdigest()[:4]
        return f"{super().prompt_hash[:12]}{extra}"

    def build_user_prompt(self, item: CaptionInput) -> str:
        """The mode's user prompt plus the patch's location (from ``meta.json``'s ``tile``).

        Args:
            item: The sample.

        Returns:
            The user prompt.
        """
        prompt = super().build_user_prompt(item)
        location = tile_location(str(item.meta.get("tile", "")))
        return prompt + location if location else prompt

    def postprocess(self, text: str, request: CaptionRequest) -> str:
        """The parent's cleaning, then a full stop at the end if the model left it out.

        Args:
            text: Raw backend output.
            request: The request it answers.

        Returns:
            The caption.
        """
        text = super().postprocess(text, request)
        return text if not text or text.endswith((".", "!", "?")) else text + "."
