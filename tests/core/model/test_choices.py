"""The user's choices (preprocessing, labels, image input): one core API and one precedence for
the loader, the CLI and the app; the user's explicit choice wins over metadata, over defaults,
and the source says which is in force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fvdesk.core.errors import ConfigError
from fvdesk.core.model.choices import SOURCES, Choices, first_choice
from fvdesk.core.model.loader import load_model
from fvdesk.core.model.sidecar import save_sidecar, sidecar_path
from tests import models as test_models

NAMES = [f"class {i}" for i in range(10)]


@pytest.fixture
def labelled(model_cache: Path, tmp_path: Path) -> Path:
    """A 10-class model whose metadata names its classes and preprocessing."""
    src = test_models.small_onnx(model_cache, "rgb")
    props = {"fvdesk.labels": json.dumps(NAMES), "fvdesk.preprocessing": "caffe"}
    return test_models.with_metadata(src, tmp_path / "m.onnx", props)


def write_labels(path: Path, prefix: str) -> Path:
    path.write_text("\n".join(f"{prefix} {i}" for i in range(10)) + "\n")
    return path


def test_the_saved_labels_beat_the_metadata_as_the_saved_preprocessing_does(
    labelled: Path, tmp_path: Path
) -> None:
    m = load_model(labelled, check_parity=False)
    assert (m.labels, m.labels_source) == (NAMES, "metadata")
    assert m.preprocessing.source == "metadata"
    mine = write_labels(tmp_path / "mine.txt", "mine")
    save_sidecar(
        labelled, labels=mine, preprocessing=m.choices.with_preprocessing("unit").preprocessing
    )
    again = load_model(labelled, check_parity=False)
    assert (again.labels[0], again.labels_source) == ("mine 0", "sidecar")
    assert again.labels_file == str(mine.resolve())
    assert (again.preprocessing.preset, again.preprocessing.source) == ("unit", "sidecar")
    # a choice for this run beats the saved one; the sidecar is untouched
    flag = load_model(labelled, preprocessing="byte", check_parity=False)
    assert (flag.preprocessing.preset, flag.preprocessing.source) == ("byte", "user")
    flag.use(flag.choices.with_labels_file(write_labels(tmp_path / "run.txt", "run")))
    assert (flag.labels[0], flag.labels_source) == ("run 0", "user")
    assert json.loads(sidecar_path(labelled).read_text())["labels"] == "mine.txt"
    # back to the model's own: the metadata's
    own = flag.choices.with_own_labels(flag.metadata, 10)
    assert (own.label_list(), own.labels_source, own.labels_file) == (NAMES, "metadata", "")


def test_choices_are_plain_data_and_remembered_only_when_asked(
    labelled: Path, tmp_path: Path
) -> None:
    m = load_model(labelled, check_parity=False)
    before = m.choices
    chosen = before.with_preprocessing("symmetric").with_labels_file(
        write_labels(tmp_path / "a.txt", "a")
    )
    assert (m.preprocessing, m.labels) == (before.preprocessing, list(before.labels))  # untouched
    assert chosen.preprocessing.source == "user" and chosen.labels_source == "user"
    assert not sidecar_path(labelled).exists()
    assert "your choice" in chosen.describe() and SOURCES["sidecar"] == "saved choice (sidecar)"
    chosen.remember(labelled, preprocessing=True)
    assert set(json.loads(sidecar_path(labelled).read_text())) == {"version", "preprocessing"}
    chosen.remember(labelled, labels=True)
    assert json.loads(sidecar_path(labelled).read_text())["labels"] == "a.txt"
    chosen.with_own_labels(m.metadata, 10).remember(labelled, labels=True)  # back: forgotten
    assert "labels" not in json.loads(sidecar_path(labelled).read_text())
    with pytest.raises(ConfigError, match="does not exist"):
        before.with_labels_file(tmp_path / "none.txt")
    with pytest.raises(ConfigError, match="The preprocessing choice"):
        before.with_preprocessing("sepia")


def test_jobs_carry_the_choices_they_were_built_with(labelled: Path, tmp_path: Path) -> None:
    from fvdesk.core.jobs.job import Job, UnitJob

    m = load_model(labelled, check_parity=False)
    logits = m.graph.logits.name
    chosen = m.choices.with_preprocessing("unit").with_labels_file(
        write_labels(tmp_path / "b.txt", "b")
    )
    job = Job.for_model(m, UnitJob(logits, (3,), kind="logit"), choices=chosen)
    assert job.preprocessing.preset == "unit" and job.labels[3] == "b 3"
    assert job.label(m.graph, logits, 3) == "b 3" and m.labels[3] == NAMES[3]
    plain = Job.for_model(m, UnitJob(logits, (3,), kind="logit"))
    assert plain.preprocessing == m.preprocessing and plain.labels == tuple(NAMES)


def test_the_precedence_reads_the_metadata_only_when_no_one_chose() -> None:
    def never() -> None:
        raise AssertionError("read although the user had chosen")

    assert first_choice("flag", "saved", never, "default") == "flag"
    assert first_choice(None, "saved", never, "default") == "saved"
    assert first_choice(None, None, lambda: None, lambda: "default") == "default"


def test_the_cli_says_the_source_and_remembers_the_input_too(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fvdesk.cli import main

    fast = ["--no-parity", "--device", "cpu"]
    assert main(["info", str(labelled), "--json", *fast]) == 0
    assert json.loads(capsys.readouterr().out)["labels"]["source"] == "metadata"
    mine = write_labels(tmp_path / "mine.txt", "mine")
    assert main(["info", str(labelled), "--labels", str(mine), "--remember", "--json", *fast]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labels"]["source"] == "user" and info["labels"]["file"] == str(mine)
    assert main(["info", str(labelled), "--json", *fast]) == 0  # the saved choice beats metadata
    info = json.loads(capsys.readouterr().out)
    assert info["labels"]["source"] == "sidecar" and info["labels"]["file"] == str(mine.resolve())
    two = test_models.two_image_inputs(tmp_path)
    assert main(["info", str(two), "--input", "right", "--remember", *fast]) == 0
    capsys.readouterr()
    assert json.loads(sidecar_path(two).read_text())["input_name"] == "right"
    assert load_model(two, check_parity=False).input_source == "sidecar"


def test_a_model_from_the_loader_has_its_choices_sources() -> None:
    from fvdesk.core.resources import demo_model_path

    m = load_model(demo_model_path(), check_parity=False)
    c = Choices.of(m)
    assert c.labels_source == m.labels_source and c.input_name == m.input.name
    assert c.input_source == "default" and c.preprocessing is m.preprocessing
