"""``aras-data``: build, import, prepare, inspect and verify shard sets.

Subcommands::

    aras-data demo --out data/demo                 procedural demo set (train/val/test)
    aras-data import ROOT|ZIP... --out DIR         published ARAS400k release (folder or zips) -> shards
    aras-data download --bbox W S E N --out DIR    Sentinel-2 + WorldCover tiles of a box
    aras-data prepare --s2 DIR --worldcover DIR --out DIR   GeoTIFFs -> patches -> shards
    aras-data stats DIR [DIR ...] --plot fig.png   per-class table and Figure-3 bar chart
    aras-data preview DIR --out grid.png           image / mask grid of a set's samples
    aras-data verify DIR [DIR ...]                 check shards against manifests
    aras-data merge DIR [DIR ...] --out DIR        join the part-K-of-N sets of split workers

Every subcommand takes ``--config FILE.yaml`` with the same option names.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aras400k.cli import call_with, command_main, command_parser
from aras400k.data.remote import as_location

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["build_parser", "main"]

PROGRAM = "aras-data"


def build_parser() -> ArgumentParser:
    """The ``aras-data`` parser with its eight subcommands."""
    parser = command_parser(PROGRAM, "Build, import, prepare, inspect and verify aras400k shard sets.", config=False)
    commands = parser.add_subcommands(dest="command")

    demo = command_parser(None, "Write the procedural demo set as OUT/{train,val,test} shard sets.")
    demo.add_argument("--out", type=str, default="data/demo", help="destination folder")
    demo.add_argument("--train", type=int, default=1600, help="training samples")
    demo.add_argument("--val", type=int, default=200, help="validation samples")
    demo.add_argument("--test", type=int, default=200, help="test samples")
    demo.add_argument("--image_size", type=int, default=64, help="patch side in pixels (the paper: 256)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the whole set")
    demo.add_argument("--samples_per_shard", type=int, default=200, help="samples per tar file")
    demo.add_argument("--overwrite", type=bool, default=False, help="replace existing shard sets")
    demo.add_argument(
        "--source",
        choices=["real", "synth_uncond", "synth_cond"],
        default="real",
        help="source recorded in the shards (a synth_* set with another seed is a stand-in for GAN output)",
    )
    commands.add_subcommand("demo", demo, help="build the procedural demo set")

    imp = command_parser(
        None,
        "Import the published ARAS400k release into shards: the extracted folder (ROOT/{split}/{images,masks}/*.png) "
        "or the released zips as they are (train.zip val.zip test.zip synth.zip; read in place, MD5-checked first).",
    )
    imp.add_argument("root", nargs="+", help="release folder, or the release zips")
    imp.add_argument("--out", type=str, required=True, help="destination folder (one shard set per split)")
    imp.add_argument("--splits", type=list[str] | None, default=None, help="splits to import (default: all found)")
    imp.add_argument("--synth_source", choices=["synth_uncond", "synth_cond"], default="synth_uncond")
    imp.add_argument(
        "--on_error", "--on-error", choices=["skip", "fail"], default="fail", help="skip or stop at a bad file"
    )
    imp.add_argument(
        "--unknown_colours",
        "--unknown-colours",
        choices=["error", "ignore"],
        default="error",
        help="unknown mask colours",
    )
    imp.add_argument("--captions", type=list[str], default=[], help="extra caption CSVs (filename,caption)")
    imp.add_argument("--samples_per_shard", type=int, default=1000)
    imp.add_argument("--overwrite", type=bool, default=False)
    imp.add_argument("--workers", type=int | None, default=None, help="processes (default: every usable core)")
    imp.add_argument(
        "--check_md5",
        "--check-md5",
        type=bool,
        default=True,
        help="check zips with a published name against the published MD5 table before importing",
    )
    commands.add_subcommand("import", imp, help="import the ARAS400k release folders")

    down = command_parser(  # docs/mapping.md
        None,
        "Find and fetch the Sentinel-2 RGBNIR and WorldCover tiles covering a box into OUT/s2 and OUT/worldcover "
        "(the folders aras-data prepare reads). Resumable: a rerun fetches only missing or incomplete files.",
    )
    down.add_argument("--bbox", type=float, nargs=4, required=True, metavar=("W", "S", "E", "N"), help="degrees")
    down.add_argument("--year", type=int, default=2021, help="year of the composites and maps")
    down.add_argument("--out", type=str, required=True, help="destination folder")
    down.add_argument(
        "--source",
        choices=["terrascope", "stac"],
        default="terrascope",
        help="terrascope (TERRASCOPE_USERNAME / TERRASCOPE_PASSWORD) or a STAC API (--stac_url)",
    )
    down.add_argument("--stac_url", type=str | None, default=None, help="STAC API landing page (source stac)")
    down.add_argument("--s2_collection", type=str | None, default=None, help="collection id of the S2 RGBNIR tiles")
    down.add_argument("--worldcover_collection", type=str | None, default=None, help="collection id of the maps")
    down.add_argument("--s2_asset", type=str | None, default=None, help="STAC asset key (default: *_S2RGBNIR.tif)")
    down.add_argument("--worldcover_asset", type=str | None, default=None, help="STAC asset key (default: *_Map.tif)")
    down.add_argument("--workers", type=int, default=4, help="parallel downloads")
    down.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for an answer")
    down.add_argument("--retries", type=int, default=2, help="extra tries of a dropped file (resuming it)")
    down.add_argument(
        "--dry_run", "--dry-run", type=bool, default=False, help="list the files and sizes; fetch nothing"
    )
    down.add_argument("--quiet", type=bool, default=False, help="no progress bar")
    commands.add_subcommand("download", down, help="fetch the S2 + WorldCover tiles of a bounding box")

    prep = command_parser(
        None, "Cut Sentinel-2 + WorldCover GeoTIFFs into patches and write OUT/{train,val,test} shards."
    )
    prep.add_argument("--s2", type=str, required=True, help="folder of *_S2RGBNIR.tif tiles")
    prep.add_argument("--worldcover", type=str, required=True, help="folder of WorldCover *_Map.tif tiles")
    prep.add_argument("--out", type=str, required=True, help="destination folder")
    prep.add_argument("--patch_size", type=int, default=256)
    prep.add_argument(
        "--remap",
        type=dict[int, int] | None,
        default=None,
        help="WorldCover code -> class index overrides of the default remap, e.g. '{90: 0}' sends wetland to tree",
    )
    prep.add_argument("--max_water", type=float, default=0.9, help="drop patches with more water than this")
    prep.add_argument("--ratios", type=tuple[float, float, float], default=(0.8, 0.1, 0.1), help="train/val/test")
    prep.add_argument("--seed", type=int, default=0, help="seed of the split hash")
    prep.add_argument("--samples_per_shard", type=int, default=1000)
    prep.add_argument("--overwrite", type=bool, default=False)
    prep.add_argument("--workers", type=int | None, default=None, help="processes (default: every usable core)")
    commands.add_subcommand("prepare", prep, help="GeoTIFFs -> patches -> shards (needs the geo extra)")

    stats = command_parser(None, "Print the per-class composition of shard sets and draw the Figure-3 bar chart.")
    stats.add_argument("dirs", nargs="+", help="shard set folders (or URL folders)")
    stats.add_argument("--labels", type=list[str] | None, default=None, help="display names")
    stats.add_argument("--plot", type=str | None, default=None, help="PNG file for the bar chart")
    commands.add_subcommand("stats", stats, help="per-class composition table and chart")

    preview = command_parser(None, "Draw the first (or evenly spread) samples of a shard set as image / mask pairs.")
    preview.add_argument("dir", type=str, help="shard set folder (or URL folder)")
    preview.add_argument("--out", type=str, required=True, help="PNG file to write")
    preview.add_argument("--n", type=int, default=16, help="number of samples")
    preview.add_argument("--columns", type=int, default=4, help="image / mask pairs per row")
    preview.add_argument("--spread", type=bool, default=False, help="evenly spaced samples instead of the first n")
    commands.add_subcommand("preview", preview, help="a PNG grid of a shard set's samples and masks")

    verify = command_parser(None, "Check shard sets against their manifests and decode every sample.")
    verify.add_argument(
        "dirs", nargs="+", help="shard set folders or URL folders (a local folder of split folders is expanded)"
    )
    verify.add_argument("--quiet", type=bool, default=False, help="no progress bar")
    commands.add_subcommand("verify", verify, help="verify shard sets; exits 1 on any problem")

    merge = command_parser(
        None,
        "Join shard sets of one run into one shard set: the OUT/part-K-of-N sets written by workers of a split "
        "aras-synth run (--shard_index/--num_shards), taken in worker order, or other sets made the same way. "
        "Tar files are hard-linked when possible (else copied) and renumbered; the manifest sums the counts.",
    )
    merge.add_argument(
        "dirs",
        nargs="+",
        help="shard sets to merge (local or URL folders); a folder holding part-K-of-N sets stands for them",
    )
    merge.add_argument("--out", type=str, required=True, help="folder of the merged set (may hold the parts)")
    merge.add_argument("--overwrite", type=bool, default=False, help="replace a shard set already at --out")
    merge.add_argument("--link", type=bool, default=True, help="hard-link the tar files when possible (else copy)")
    commands.add_subcommand("merge", merge, help="join the part-K-of-N shard sets of split workers")
    return parser


def _download_plan(cfg: Namespace) -> Any:
    from aras400k.data import download as dl

    if cfg.source == "stac":
        if not cfg.stac_url:
            raise ValueError("--source stac needs --stac_url")
        defaults = dl.DEFAULT_STAC_COLLECTIONS
        collections = (cfg.s2_collection or defaults[0], cfg.worldcover_collection or defaults[1])
        assets = (cfg.s2_asset, cfg.worldcover_asset)
        return dl.stac_plan(cfg.stac_url, cfg.bbox, cfg.year, collections, assets, timeout=cfg.timeout)
    named = (cfg.s2_collection, cfg.worldcover_collection)
    if any(named) and not all(named):
        raise ValueError("name both --s2_collection and --worldcover_collection, or neither")
    return dl.terrascope_plan(cfg.bbox, cfg.year, named if all(named) else None)


def _download(cfg: Namespace) -> None:
    from aras400k.data.download import download

    plan = _download_plan(cfg)
    if cfg.dry_run:
        print(plan.describe(cfg.out))
    else:
        print(call_with(download, cfg, plan=plan, progress=not cfg.quiet).summary())


def _demo(cfg: Namespace) -> None:
    from aras400k.data.demo import make_demo

    written = call_with(make_demo, cfg, out_dir=cfg.out, num_samples=(cfg.train, cfg.val, cfg.test))
    print(f"wrote {sum(written.values())} samples to {cfg.out}: " + ", ".join(f"{k} {v}" for k, v in written.items()))


def _import(cfg: Namespace) -> None:
    from aras400k.data.release import import_release

    roots = [str(r) for r in cfg.root]
    report = call_with(
        import_release,
        cfg,
        root=roots[0] if len(roots) == 1 else roots,
        out_dir=cfg.out,
        notice=lambda line: print(line, file=sys.stderr),
    )
    print(report.summary())


def _prepare(cfg: Namespace) -> None:
    from aras400k.classes import DEFAULT_WORLDCOVER_REMAP
    from aras400k.data.geotiff import prepare_geotiffs

    remap = {**DEFAULT_WORLDCOVER_REMAP, **cfg.remap} if cfg.remap else None
    report = call_with(
        prepare_geotiffs, cfg, s2_dir=cfg.s2, worldcover_dir=cfg.worldcover, out_dir=cfg.out, remap=remap
    )
    print(report.summary())


def _stats(cfg: Namespace) -> None:
    from aras400k.data.stats import composition_table, load_compositions, plot_compositions

    datasets = load_compositions(_expand(cfg.dirs), cfg.labels)
    print(composition_table(datasets))
    if cfg.plot:
        print(f"bar chart written to {plot_compositions(datasets, cfg.plot)}")


def _preview(cfg: Namespace) -> None:
    from aras400k.data.preview import preview_shards

    print(f"preview written to {preview_shards(cfg.dir, cfg.out, n=cfg.n, columns=cfg.columns, spread=cfg.spread)}")


def _expand(dirs: list[str]) -> list[str | Path]:
    """Replace a local folder without a manifest by its sub-folders that have one (a URL cannot be listed)."""
    out: list[str | Path] = []
    for spec in dirs:
        d = as_location(spec)
        if isinstance(d, str) or (d / "manifest.json").exists():
            out.append(d)
        else:
            out.extend(sorted(p.parent for p in d.glob("*/manifest.json")) or [d])
    return out


def _verify(cfg: Namespace) -> int:
    from aras400k.data.verify import verify_shards

    status = 0
    for directory in _expand(cfg.dirs):
        report = verify_shards(directory, progress=not cfg.quiet)
        print(report.summary())
        status = status or (0 if report.ok else 1)
    return status


def _merge(cfg: Namespace) -> None:
    from aras400k.data.merge import merge_shard_sets, worker_parts

    parts: list[str | Path] = []
    for d in cfg.dirs:
        parts.extend(worker_parts(d) or [as_location(d)])
    report = merge_shard_sets(parts, cfg.out, overwrite=cfg.overwrite, link=cfg.link)
    print(report.summary())


_COMMANDS: dict[str, Any] = {
    "demo": _demo,
    "import": _import,
    "download": _download,
    "prepare": _prepare,
    "stats": _stats,
    "preview": _preview,
    "verify": _verify,
    "merge": _merge,
}


main = command_main(
    PROGRAM,
    build_parser,
    lambda cfg: _COMMANDS[cfg.command](cfg[cfg.command]),
    "0 on success, 1 when ``verify`` finds problems, 2 on bad input (one line on stderr)",
)

if __name__ == "__main__":
    sys.exit(main())
