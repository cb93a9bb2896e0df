"""``aras-map``: a whole Sentinel-2 scene -> a land-cover GeoTIFF with a trained segmenter.

::

    aras-map --ckpt_path runs/seg_unet/checkpoints/last.ckpt --scene S2.tif --out landcover.tif
    aras-map --ckpt_path CKPT --scene S2.tif --out landcover.tif --reference worldcover.tif

Sliding-window inference with blended overlapping tiles (:mod:`aras400k.mapping`); the
files it writes, with and without ``--reference``, are listed in ``docs/map.md``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from aras400k.cli import call_with, command_main, command_parser
from aras400k.cli.signatures import add_options, source_signature

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["build_parser", "main"]

PROGRAM = "aras-map"
_MAP_SCENE = ("aras400k.mapping", "map_scene")
#: Parameters of ``map_scene`` given as options of the same name (``segmenter`` is ``--ckpt_path``).
_OPTIONS = [
    "scene", "out", "tile_size", "stride", "batch_size", "strip_width", "device", "peak", "quicklook", "quicklook_size",
    "reference", "remap", "overwrite", "progress",
]  # fmt: skip


def build_parser() -> ArgumentParser:
    """Returns the ``aras-map`` parser: :func:`~aras400k.mapping.map_scene`'s parameters as options.

    Their defaults and help are read from its source (:mod:`aras400k.cli.signatures`),
    since that module imports torch, which ``--help`` does not wait for.
    """
    parser = command_parser(
        PROGRAM,
        "Map a whole Sentinel-2 scene (bands 1-3 = R, G, B) with a trained segmenter: sliding windows, overlapping "
        "tiles blended, column strips of bounded memory, windowed reads and writes; a georeferenced uint8 GeoTIFF "
        "and a PNG quicklook.",
    )
    signature = source_signature(*_MAP_SCENE)
    parser.add_argument("--ckpt_path", type=str, required=True, help="segmenter checkpoint written by aras-fit")
    add_options(parser, signature, _OPTIONS, types={"remap": dict[int, int] | None})
    return parser


def _run(cfg: Namespace) -> None:
    from aras400k.mapping import map_scene

    print(call_with(map_scene, cfg, segmenter=cfg.ckpt_path).summary())


main = command_main(PROGRAM, build_parser, _run)

if __name__ == "__main__":
    sys.exit(main())
