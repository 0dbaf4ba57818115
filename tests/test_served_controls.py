"""`prediction.served.ServedControls`: controls bound to the trained versions a project serves.

The cache of bound controls is bounded for every kind of control (a trained TimelineLabels head as
much as a trained detector), least recently used first, and a promotion unloads the version served
before.
"""

from __future__ import annotations

import pytest

import prediction.served
from control_models.labeling_plan import PlanCache
from inference.model_registry import ModelRegistry
from prediction.served import ServedControls
from training.versions import ServedVersions, VersionStore

CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt" model_trainable="true">
    <Label value="circle"/><Label value="square"/>
  </RectangleLabels>
  <Video name="video" value="$video" frameRate="10"/>
  <TimelineLabels name="timeline" toName="video" model_trainable="true">
    <Label value="Red"/><Label value="Blue"/>
  </TimelineLabels>
</View>"""


@pytest.fixture
def served_controls(make_settings, tmp_path) -> tuple[ServedControls, object]:
    settings = make_settings(model_root=tmp_path)
    plan = PlanCache(settings).get(CONFIG)
    bindings = ServedControls(settings, ServedVersions(VersionStore(tmp_path)), ModelRegistry(settings))
    return bindings, plan


@pytest.mark.parametrize("control_name", ["label", "timeline"])
def test_bound_controls_are_kept_and_evicted_least_recently_used_first(
    served_controls, monkeypatch, control_name
) -> None:
    bindings, plan = served_controls
    monkeypatch.setattr(prediction.served, "MAX_BOUND_CONTROLS", 3)
    control = next(c for c in plan.controls if c.from_name == control_name)
    first = bindings.trained_control(plan, control, "trained/7/x/v1/best.pt")
    assert bindings.trained_control(plan, control, "trained/7/x/v1/best.pt") is first  # kept, not rebuilt
    for version in range(2, 5):  # v1 was used last before v2..v4 came: it goes first
        bindings.trained_control(plan, control, f"trained/7/x/v{version}/best.pt")
        assert bindings.bound_count() <= 3
    assert bindings.bound_count() == 3
    assert bindings.trained_control(plan, control, "trained/7/x/v1/best.pt") is not first  # evicted


def test_a_new_served_version_unloads_the_one_served_before(served_controls, monkeypatch) -> None:
    bindings, _ = served_controls
    unloaded = []
    monkeypatch.setattr(bindings.registry, "unload", unloaded.append)
    bindings._unload_replaced("7", "label", "trained/7/label/v1/best.pt")
    bindings._unload_replaced("7", "label", "trained/7/label/v1/best.pt")
    assert unloaded == []
    bindings._unload_replaced("7", "label", "trained/7/label/v2/best.pt")
    assert unloaded == ["trained/7/label/v1/best.pt"]
    bindings._unload_replaced("7", "label", None)  # rolled back to the configured model
    assert unloaded == ["trained/7/label/v1/best.pt", "trained/7/label/v2/best.pt"]
