"""Batch inputs: files, folders and globs become outputs that mirror the input tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmq.errors import InputError
from kmq.scale.inputs import plan_batch


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    for name in ("a.jpg", "b.png", "2023/c.jpeg", "2023/summer/d.webp", "notes.txt", ".hidden.jpg", ".cache/e.jpg"):
        _touch(root / name)
    return root


def test_a_folder_contributes_every_image_below_it_and_outputs_mirror_its_tree(tree, tmp_path):
    items = plan_batch([tree], tmp_path / "out")
    assert sorted(item.relative for item in items) == ["2023/c.kmq", "2023/summer/d.kmq", "a.kmq", "b.kmq"]
    for item in items:
        assert Path(item.output) == tmp_path / "out" / item.relative
        assert Path(item.input).is_absolute() and Path(item.input).is_file()


def test_png_format_gives_png_outputs(tree, tmp_path):
    items = plan_batch([tree / "2023"], tmp_path / "out", format="png")
    assert sorted(item.relative for item in items) == ["c.png", "summer/d.png"]


def test_several_folders_mirror_below_their_common_parent(tmp_path):
    _touch(tmp_path / "2023" / "x.jpg")
    _touch(tmp_path / "2024" / "x.jpg")
    items = plan_batch([tmp_path / "2023", tmp_path / "2024"], tmp_path / "out")
    assert [item.relative for item in items] == ["2023/x.kmq", "2024/x.kmq"]


def test_a_glob_mirrors_the_tree_below_its_first_wildcard(tree, tmp_path):
    items = plan_batch([str(tree / "**" / "*.jp*g")], tmp_path / "out")
    assert sorted(item.relative for item in items) == ["2023/c.kmq", "a.kmq"]


def test_inputs_that_would_share_an_output_keep_their_full_names(tmp_path):
    first, second = _touch(tmp_path / "in" / "b.jpg"), _touch(tmp_path / "in" / "b.png")
    items = plan_batch([first, second], tmp_path / "out")
    assert [item.relative for item in items] == ["b.jpg.kmq", "b.png.kmq"]


def test_the_same_file_given_twice_is_done_once(tree, tmp_path):
    items = plan_batch([tree / "a.jpg", tree, str(tree / "*.jpg")], tmp_path / "out")
    assert len(items) == 4 and items[0].relative == "a.kmq"


def test_an_output_folder_inside_an_input_folder_is_not_an_input(tree):
    _touch(tree / "out" / "old.png")
    items = plan_batch([tree], tree / "out")
    assert "old.png" not in {Path(item.input).name for item in items}


def test_an_input_that_matches_nothing_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        plan_batch([tmp_path / "missing.jpg"], tmp_path / "out")
    with pytest.raises(InputError, match="no image"):
        plan_batch([str(tmp_path / "*.jpg")], tmp_path / "out")


def test_an_unknown_format_is_an_input_error(tree, tmp_path):
    with pytest.raises(InputError, match="format"):
        plan_batch([tree], tmp_path / "out", format="gif")


def test_the_output_folder_cannot_be_an_input_folder(tree):
    with pytest.raises(InputError, match="output folder"):
        plan_batch([tree], tree)
