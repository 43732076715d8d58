"""The app's choices are the core's ``Choices``: held by the session, carried by each job, never
written onto the model the render thread holds; the status says where each came from."""

from __future__ import annotations

from fvdesk.core.dataset.choice import DatasetChoice
from tests.gui.support import LOGITS, fast_settings, wait_idle


def test_choices_never_touch_the_model_and_every_job_carries_them(
    qtbot, demo_window, demo_model, tmp_path, monkeypatch
) -> None:
    from fvdesk.gui.runtime import session as qt_session

    monkeypatch.setattr(qt_session, "is_embedded", lambda path: True)  # no sidecar writes
    w = demo_window
    fast_settings(w, steps=2, size=16)
    own = (demo_model.preprocessing, list(demo_model.labels), demo_model.labels_source)
    labels = tmp_path / "classes.txt"
    labels.write_text("\n".join(f"mine {i}" for i in range(8)) + "\n")
    w.session.choose_preprocessing("unit")
    w.session.choose_labels_file(str(labels))
    assert (demo_model.preprocessing, demo_model.labels, demo_model.labels_source) == own
    assert w.session.choices.labels_source == "user" and w.session.labels[2] == "mine 2"
    assert w.status.preprocessing_label.text() == "input: unit (user)"
    assert str(labels) in w.settings_panel.labels_edit.text()
    assert w.layers.tree_model.index_of_unit(LOGITS, 2).data() == "2: mine 2"
    task = w.jobs.render_units(LOGITS, [2])
    assert task.job.preprocessing.preset == "unit" and task.job.labels[2] == "mine 2"
    tile = w.tiles.tiles()[-1]
    assert tile.label == "mine 2"
    # a pass the examples browser builds carries the session's choices itself (nobody patches it)
    submitted = []
    monkeypatch.setattr(w.datasets._runner, "submit",
                        lambda model, job, *a: submitted.append(job) or (lambda: None))  # fmt: skip
    w.datasets.set_dataset(DatasetChoice(str(tmp_path)))
    w.datasets.browse_layer(LOGITS)
    assert [j.preprocessing.preset for j in submitted] == ["unit"]
    wait_idle(qtbot, w)
    assert (
        tile.result.provenance.preprocessing["preset"] == "unit" and tile.result.label == "mine 2"
    )
    w.session.revert_labels()
    assert w.session.labels == own[1] and w.session.choices.labels_source == own[2]
    assert w.layers.tree_model.index_of_unit(LOGITS, 2).data() != "2: mine 2"
