"""``aras-map``: a whole Sentinel-2 scene -> a land-cover GeoTIFF with a trained segmenter.

::

    aras-map --ckpt_path runs/seg_unet/checkpoints/last.ckpt --scene S2.tif --out landcover.tif
    aras-map --ckpt_path CKPT --scene S2.tif --out landcover.tif --reference worldcover.tif

Sliding-window inference with blended overlapping tiles, in column strips of
``--strip_width`` pixels so that memory does not grow with the scene (see
:mod:`aras400k.mapping` and ``docs/map.md``): writes ``landcover.tif`` (uint8 class ids, the release's colour
table, the scene's CRS and transform, 255 where the scene has no data) and
``landcover.png`` (a quicklook with the class legend); with ``--reference``, per-class
F1 / IoU against WorldCover, ``landcover_confusion.png`` and ``landcover_reference.json``.
"""

from __future__ import annotations

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from aras400k.cli import parse_and_run

#: ``aras400k.mapping.DEFAULT_STRIP_WIDTH``, repeated so that building the parser does not import torch.
DEFAULT_STRIP_WIDTH = 2048

__all__ = ["build_parser", "main"]

PROGRAM = "aras-map"


def build_parser() -> ArgumentParser:
    """Build the ``aras-map`` parser.

    Returns:
        The parser; it raises ``argparse.ArgumentError`` instead of exiting on bad input.
    """
    parser = ArgumentParser(
        prog=PROGRAM,
        description="Map a whole Sentinel-2 scene (bands 1-3 = R, G, B) with a trained segmenter: sliding windows, "
        "overlapping tiles blended, column strips of bounded memory, windowed reads and writes; a georeferenced "
        "uint8 GeoTIFF and a PNG quicklook.",
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_argument("--ckpt_path", type=str, required=True, help="segmenter checkpoint written by aras-fit")
    parser.add_argument("--scene", type=str, required=True, help="Sentinel-2 GeoTIFF (bands 1-3 = R, G, B)")
    parser.add_argument("--out", type=str, required=True, help="land-cover GeoTIFF to write")
    parser.add_argument("--tile_size", type=int, default=256, help="tile side in pixels (the paper's patches: 256)")
    parser.add_argument("--stride", type=int | None, default=None, help="tile step; default tile_size / 2")
    parser.add_argument("--batch_size", type=int, default=16, help="tiles per forward pass")
    parser.add_argument(
        "--strip_width",
        type=int,
        default=DEFAULT_STRIP_WIDTH,
        help="width of the column strips the scene is processed in (memory grows with it, not with the scene)",
    )
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

    report = map_scene(
        cfg.ckpt_path,
        cfg.scene,
        cfg.out,
        tile_size=cfg.tile_size,
        stride=cfg.stride,
        batch_size=cfg.batch_size,
        strip_width=cfg.strip_width,
        device=cfg.device,
        peak=cfg.peak,
        quicklook=cfg.quicklook,
        quicklook_size=cfg.quicklook_size,
        reference=cfg.reference,
        remap=cfg.remap,
        overwrite=cfg.overwrite,
        progress=cfg.progress,
    )
    print(report.summary())
    return 0


def main(args: list[str] | None = None) -> int:
    """Entry point of ``aras-map``.

    Args:
        args: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    return parse_and_run(PROGRAM, build_parser(), args, _run)
