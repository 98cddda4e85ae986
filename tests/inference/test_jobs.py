from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mambast.errors import JobError
from mambast.inference.jobs import Job, make_output_folders, output_name, plan_jobs


def _img(path: Path) -> Path:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


@pytest.fixture
def folders(tmp_path):
    c, s = tmp_path / "c", tmp_path / "s"
    c.mkdir(), s.mkdir()
    _img(c / "a.png"), _img(c / "b.jpg"), _img(s / "x.png")
    return c, s


def test_folders_pair_every_content_with_every_style_under_one_naming(folders, tmp_path):
    plan = plan_jobs(*folders, tmp_path / "o")
    assert plan.to_folder and not plan.present and not plan.refused
    assert [j.output.name for j in plan.jobs] == ["a_stylized_x.png", "b_stylized_x.png"]
    assert output_name("c/a.jpg", "s/x.png") == "a_stylized_x.png"


def test_outputs_already_there_are_kept_unless_overwrite(folders, tmp_path):
    (tmp_path / "o").mkdir()
    _img(tmp_path / "o" / "a_stylized_x.png")
    plan = plan_jobs(*folders, tmp_path / "o")
    assert [j.output.name for j in plan.present] == ["a_stylized_x.png"] and len(plan.jobs) == 1
    assert len(plan_jobs(*folders, tmp_path / "o", overwrite=True).jobs) == 2


def test_pairs_that_would_share_an_output_are_refused(folders, tmp_path):
    _img(folders[0] / "a.jpg")
    plan = plan_jobs(*folders, tmp_path / "o")
    assert [j.output.name for j in plan.jobs] == ["b_stylized_x.png"]
    assert plan.failed == 2 and "would all be written there" in plan.refused[0][0]


def test_earlier_outputs_in_an_input_folder_are_not_inputs(folders):
    content, style = folders
    _img(content / "a_stylized_x.png")
    plan = plan_jobs(content, style, content)
    assert sorted(j.content.name for j in plan.jobs + plan.present) == ["a.png", "b.jpg"]
    assert [j.output.name for j in plan.present] == ["a_stylized_x.png"]


def test_an_output_over_an_input_is_refused(folders):
    content, style = folders
    with pytest.raises(JobError, match="refusing to write over an input image"):
        plan_jobs(content / "a.png", style / "x.png", content / "a.png")


def test_an_empty_output_name_is_refused(folders):
    with pytest.raises(JobError, match="output: empty name"):
        plan_jobs(*folders, "")


def test_a_folder_where_an_output_goes_is_refused_not_taken_as_done(folders, tmp_path):
    (tmp_path / "o" / "a_stylized_x.png").mkdir(parents=True)
    for overwrite in (False, True):
        plan = plan_jobs(*folders, tmp_path / "o", overwrite=overwrite)
        assert "a_stylized_x.png" not in [j.output.name for j in plan.jobs + plan.present]
        assert plan.failed == 1 and "is a folder where this output goes" in plan.refused[0][0]


def test_output_folders_are_made_before_stylizing(tmp_path):
    made = make_output_folders([Job("c.png", "s.png", tmp_path / "new" / "deeper" / "o.png")])
    assert made == [tmp_path / "new", tmp_path / "new" / "deeper"] and made[-1].is_dir()
