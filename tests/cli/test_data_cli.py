import json

import numpy as np
import pytest
from PIL import Image

from aras400k.classes import index_to_colour
from aras400k.cli.data import main
from tests.conftest import write_random_set


def test_demo_verify_stats(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--train", "6", "--val", "2", "--test", "2", "--image_size", "32"]) == 0
    assert "wrote 10 samples" in capsys.readouterr().out
    assert main(["verify", str(out), "--quiet", "true"]) == 0
    assert capsys.readouterr().out.count("OK") == 3
    plot = tmp_path / "fig" / "composition.png"
    assert main(["stats", str(out / "train"), str(out / "val"), "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    assert "| class | train | val |" in table and "| water |" in table
    assert Image.open(plot).size[0] > 400


def test_demo_from_yaml_config(tmp_path, capsys):
    config = tmp_path / "demo.yaml"
    config.write_text(f"out: {tmp_path / 'cfg'}\ntrain: 3\nval: 1\ntest: 1\nimage_size: 32\n")
    assert main(["demo", "--config", str(config)]) == 0
    manifest = json.loads((tmp_path / "cfg" / "train" / "manifest.json").read_text())
    assert manifest["num_samples"] == 3


def test_verify_exits_nonzero_on_corruption(tmp_path, capsys):
    root = write_random_set(tmp_path / "s", 4, per_shard=2)
    (root / "train-000001.tar").unlink()
    assert main(["verify", str(root), "--quiet", "true"]) == 1
    assert "shard file is missing" in capsys.readouterr().out


def test_bad_input_gives_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["stats", str(tmp_path / "nope")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aras-data: error:") and "\n" not in err and "nope" in err


def test_import_command_on_a_tiny_release(tmp_path, capsys):
    for split in ("train", "val"):
        (tmp_path / "rel" / split / "images").mkdir(parents=True)
        (tmp_path / "rel" / split / "masks").mkdir(parents=True)
        mask = np.zeros((32, 32), np.uint8)
        mask[:, 16:] = 6
        Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "rel" / split / "images" / "p1.png")
        Image.fromarray(index_to_colour(mask)).save(tmp_path / "rel" / split / "masks" / "p1.png")
    assert main(["import", str(tmp_path / "rel"), "--out", str(tmp_path / "out")]) == 0
    assert main(["verify", str(tmp_path / "out"), "--quiet", "true"]) == 0
    bad = tmp_path / "rel" / "train" / "masks" / "p1.png"
    rgb = np.array(Image.open(bad))
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(bad)
    with pytest.raises(SystemExit) as exc:
        main(["import", str(tmp_path / "rel"), "--out", str(tmp_path / "out2")])
    assert exc.value.code == 2
    assert "p1.png" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "rel"), "--out", str(tmp_path / "out3"), "--on-error", "skip"]) == 0


def test_prepare_without_inputs_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--s2", str(tmp_path / "s2"), "--worldcover", str(tmp_path / "wc"), "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "s2" in capsys.readouterr().err


def test_prepare_command_on_small_geotiffs(tmp_path, capsys):
    from tests.data.test_geotiff import PATCH, scene

    paths = scene.__wrapped__(tmp_path)
    args = ["prepare", "--s2", str(paths["s2"]), "--worldcover", str(paths["wc"]), "--out", str(paths["out"])]
    assert main([*args, "--patch_size", str(PATCH), "--remap", "{90: 0}"]) == 0
    out = capsys.readouterr().out
    assert "skipped nodata" in out and "written" in out
    assert main(["verify", str(paths["out"]), "--quiet", "true"]) == 0


def test_preview_draws_image_mask_pairs(tmp_path, capsys, monkeypatch):
    import aras400k.data.preview as preview

    labelled = write_random_set(tmp_path / "labelled", 10, per_shard=4)
    drawn = {}

    def spy(images, masks, path, keys=None, columns=4, title=None):  # records what would be drawn
        drawn.update(images=images, masks=masks, keys=keys, title=title)
        return real_plot(images, masks, path, keys=keys, columns=columns, title=title)

    real_plot = preview.plot_sample_grid
    monkeypatch.setattr(preview, "plot_sample_grid", spy)
    out = tmp_path / "grid.png"
    assert main(["preview", str(labelled), "--out", str(out), "--n", "4", "--spread", "true"]) == 0
    assert "preview written" in capsys.readouterr().out
    assert drawn["keys"] == ["s0000", "s0003", "s0006", "s0009"]  # evenly spread over 10
    assert all(m is not None and m.shape == (32, 32) for m in drawn["masks"])
    assert "4 of 10 samples" in drawn["title"]
    width, height = Image.open(out).size
    assert width > height > 0  # 4 image / mask pairs side by side

    unlabelled = write_random_set(tmp_path / "unlabelled", 3, masks=False)
    assert main(["preview", str(unlabelled), "--out", str(tmp_path / "u.png"), "--n", "8"]) == 0
    assert drawn["keys"] == ["s0000", "s0001", "s0002"] and drawn["masks"] == [None, None, None]
    with pytest.raises(SystemExit):
        main(["preview", str(unlabelled), "--out", str(tmp_path / "x.png"), "--n", "0"])
    assert "n and columns must be >= 1" in capsys.readouterr().err


def test_import_command_takes_workers(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    for split in ("train", "val"):
        (tmp_path / "rel" / split / "images").mkdir(parents=True)
        (tmp_path / "rel" / split / "masks").mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(tmp_path / "rel" / split / "images" / "a.png")
        Image.fromarray(index_to_colour(mask)).save(tmp_path / "rel" / split / "masks" / "a.png")
    for n in (1, 2):
        assert main(["import", str(tmp_path / "rel"), "--out", str(tmp_path / f"w{n}"), "--workers", str(n)]) == 0
    for split in ("train", "val"):
        one, two = ((tmp_path / f"w{n}" / split / f"{split}-000000.tar").read_bytes() for n in (1, 2))
        assert one == two
    with pytest.raises(SystemExit):
        main(["import", str(tmp_path / "rel"), "--out", str(tmp_path / "w0"), "--workers", "0"])
