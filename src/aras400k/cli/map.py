"""``aras-map``: a whole Sentinel-2 scene -> a land-cover GeoTIFF with a trained segmenter.

::

    aras-map --ckpt_path runs/seg_unet/checkpoints/last.ckpt --scene S2.tif --out landcover.tif
    aras-map --ckpt_path CKPT --scene S2.tif --out landcover.tif --reference worldcover.tif

Sliding-window inference with blended overlapping tiles (see :mod:`aras400k.mapping`
and ``docs/map.md``): writes ``landcover.tif`` (uint8 class ids, the release's colour
table, the scene's CRS and transform, 255 where the scene has no data) and
``landcover.png`` (a quicklook with the class legend); with ``--reference``, per-class
F1 / IoU against WorldCover, ``landcover_confusion.png`` and ``landcover_reference.json``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from aras400k.cli import call_with, command_main, command_parser

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["build_parser", "main"]

PROGRAM = "aras-map"


def build_parser() -> ArgumentParser:
    """Build the ``aras-map`` parser.

    The options are :func:`aras400k.mapping.map_scene`'s parameters (typed here: that
    module imports torch, which ``--help`` does not wait for).

    Returns:
        The parser; it raises ``argparse.ArgumentError`` instead of exiting on bad input.
    """
    parser = command_parser(
        PROGRAM,
        "Map a whole Sentinel-2 scene (bands 1-3 = R, G, B) with a trained segmenter: sliding windows, overlapping "
        "tiles blended, windowed reads and writes; a georeferenced uint8 GeoTIFF and a PNG quicklook.",
    )
    parser.add_argument("--ckpt_path", type=str, required=True, help="segmenter checkpoint written by aras-fit")
    parser.add_argument("--scene", type=str, required=True, help="Sentinel-2 GeoTIFF (bands 1-3 = R, G, B)")
    parser.add_argument("--out", type=str, required=True, help="land-cover GeoTIFF to write")
    parser.add_argument("--tile_size", type=int, default=256, help="tile side in pixels (the paper's patches: 256)")
    parser.add_argument("--stride", type=int | None, default=None, help="tile step; default tile_size / 2")
    parser.add_argument("--batch_size", type=int, default=16, help="tiles per forward pass")
    parser.add_argument("--device", type=str, default="auto", help="auto (GPU if any), cpu, cuda or cuda:N")
    parser.add_argument(
        "--peak", type=float | None, default=None, help="scale the scene by this value (default: each tile's maximum)"
    )
    parser.add_argument("--quicklook", type=str | None, default="auto", help="PNG quicklook (auto: OUT with .png)")
    parser.add_argument("--quicklook_size", type=int, default=1024, help="longest side of the quicklook map")
    parser.add_argument("--reference", type=str | None, default=None, help="ESA WorldCover GeoTIFF to compare with")
    parser.add_argument(
        "--remap", type=dict[int, int] | None, default=None, help="WorldCover code -> class index overrides"
    )
    parser.add_argument("--overwrite", type=bool, default=False, help="replace existing outputs")
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar over the tiles")
    return parser


def _run(cfg: Namespace) -> int:
    from aras400k.mapping import map_scene

    print(call_with(map_scene, cfg, segmenter=cfg.ckpt_path).summary())
    return 0


main = command_main(PROGRAM, build_parser, _run)

if __name__ == "__main__":
    sys.exit(main())
