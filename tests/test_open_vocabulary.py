"""Open vocabulary from the labels: `model_prompts="labels"` on a YOLOE model (built from
`yoloe-26s-seg.yaml`, see `tests.known_models.build_constant_yoloe_model`).

The text encoder cannot be downloaded here, so tests hand the registry's one seam (`text_encoder`) an
encoder of chosen embeddings: the prompt named HIT gets the unit vector the model's cells look like
(every square found, score ~0.99), every other prompt an orthogonal one (nothing found). Which label the
regions carry therefore says which prompt the backend gave which class.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.known_models import YOLOE_FEATURE, build_constant_yoloe_model
from tests.test_server import assert_valid, percent_box

W, H = 256, 192
MODEL = "yoloe-26s-seg.pt"


class ChosenEmbeddings:
    """A text encoder: `hit` -> the model's feature direction, any other prompt -> an orthogonal unit vector."""

    def __init__(self, hit: str):
        self.hit = hit
        self.calls: list[list[str]] = []

    def __call__(self, yolo, prompts: list[str]):
        import torch

        self.calls.append(list(prompts))
        embeddings = torch.zeros((1, len(prompts), 512))
        for i, prompt in enumerate(prompts):
            embeddings[0, i, YOLOE_FEATURE if prompt == self.hit else YOLOE_FEATURE + 1 + i] = 1.0
        return embeddings


@pytest.fixture(scope="module")
def yoloe_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("yoloe-models")
    build_constant_yoloe_model(root / MODEL, half_side=1, imgsz=256)
    return root


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), np.full((H, W, 3), 127, np.uint8))
    return path


def config(labels: str, tags=("RectangleLabels", "PolygonLabels", "BrushLabels"), extra: str = "") -> str:
    controls = "".join(
        f'<{tag} name="{tag.lower()}" toName="image" model_path="{MODEL}" model_prompts="labels" {extra}>'
        f"{labels}</{tag}>"
        for tag in tags
    )
    return f'<View><Image name="image" value="$image"/>{controls}</View>'


LABELS = '<Label value="Car" predicted_values="car,pickup truck"/><Label value="Person"/><Label value="dog"/>'


def backend_client(make_settings, root: Path, encoder):
    from fastapi.testclient import TestClient

    from inference.model_registry import ModelRegistry
    from model import YOLOBackend
    from server.app import create_app

    settings = make_settings(model_root=root)
    backend = YOLOBackend(settings, registry=ModelRegistry(settings, text_encoder=encoder))
    return TestClient(create_app(settings, backend)), backend


def predict(client, label_config: str, image: Path) -> dict:
    body = {"tasks": [{"id": 1, "data": {"image": str(image)}}], "label_config": label_config}
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_labels_and_their_predicted_values_are_the_prompts_in_config_order(make_settings):
    from control_models.labeling_plan import build_plan

    plan = build_plan(config(LABELS), make_settings())
    assert [c.prompts for c in plan.controls] == [("car", "pickup truck", "Person", "dog")] * 3
    assert all(c.training is None for c in plan.controls)  # nothing to train: README, "Models"
    closed = build_plan(config(LABELS).replace(' model_prompts="labels"', ""), make_settings())
    assert [c.prompts for c in closed.controls] == [()] * 3
    # MODEL_FORMAT=openvino-int8 for the closed-set models leaves the prompted ones on their .pt
    int8_default = build_plan(
        config(LABELS, tags=("RectangleLabels",)), make_settings(model_format="openvino-int8")
    )
    assert [c.model_format for c in int8_default.controls] == ["pt"]


@pytest.mark.parametrize(
    ("hit", "label"), [("pickup truck", "Car"), ("car", "Car"), ("Person", "Person"), ("dog", "dog")]
)
def test_regions_come_back_under_the_label_whose_prompt_found_them(
    make_settings, yoloe_root, image, tmp_path, hit, label
):
    from label_studio_sdk.converter.brush import decode_rle

    # Its own MODEL_ROOT: embeddings cached beside the model by another case would answer for this one.
    client, _ = backend_client(make_settings, own_root(yoloe_root, tmp_path), ChosenEmbeddings(hit))
    with client:
        body = predict(client, config(LABELS), image)
    (prediction,) = body["results"]
    assert_valid(config(LABELS), prediction)
    by_type: dict[str, list[dict]] = {}
    for region in prediction["result"]:
        by_type.setdefault(region["type"], []).append(region)
    assert sorted(by_type) == ["brushlabels", "polygonlabels", "rectanglelabels"]
    for kind, regions in by_type.items():
        assert len(regions) == 48 and {r["value"][kind][0] for r in regions} == {label}, kind
    truth = sorted(
        (max(x - 32, 0), max(y - 32, 0), min(x + 32, W), min(y + 32, H))
        for x in range(16, W, 32)
        for y in range(16, H, 32)
    )
    assert (
        sorted(tuple(np.round(percent_box(r["value"], W, H), 1)) for r in by_type["rectanglelabels"]) == truth
    )
    painted = decode_rle(by_type["brushlabels"][0]["value"]["rle"]).reshape(H, W, 4)[..., 3] > 0
    assert painted.sum() > 0 and not body.get("errors")


def own_root(yoloe_root: Path, tmp_path: Path) -> Path:
    """A MODEL_ROOT with the YOLOE model and no embeddings cached beside it yet."""
    import shutil

    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(yoloe_root / MODEL, root / MODEL)
    return root


def test_embeddings_are_computed_once_per_prompt_list_and_shared_through_the_disk(
    make_settings, yoloe_root, image, tmp_path
):
    root = own_root(yoloe_root, tmp_path)
    encoder = ChosenEmbeddings("Person")
    client, backend = backend_client(make_settings, root, encoder)
    same_prompts = config(
        '<Label value="Auto" predicted_values="car,pickup truck"/><Label value="Person"/><Label value="dog"/>'
    )
    with client:
        first = predict(client, config(LABELS), image)
        predict(client, config(LABELS), image)
        other_config = predict(client, same_prompts, image)
        other_prompts = predict(client, config('<Label value="Person"/><Label value="cat"/>'), image)
    prompted = [name for name in backend.registry.loaded() if "prompts:" in name]
    assert len(prompted) == 2, prompted  # one copy per prompt list, shared by configs with equal prompts
    assert {
        r["value"]["rectanglelabels"][0]
        for r in first["results"][0]["result"]
        if r["type"] == "rectanglelabels"
    } == {"Person"}
    assert len(other_config["results"][0]["result"]) == len(first["results"][0]["result"])
    assert len(other_prompts["results"][0]["result"]) == 3 * 48
    # Four requests, three configs, two prompt lists: two encoder runs, each with its prompts in config order.
    assert encoder.calls == [["car", "pickup truck", "Person", "dog"], ["Person", "cat"]]
    # Another worker process (a fresh registry) reads them from beside the model: no encoder run at all.
    again = ChosenEmbeddings("nobody")
    client, _ = backend_client(make_settings, root, again)
    with client:
        answer = predict(client, config(LABELS), image)
    assert again.calls == [] and len(answer["results"][0]["result"]) == 3 * 48


def test_a_missing_text_encoder_says_what_to_put_where(make_settings, yoloe_root, image, tmp_path):
    from ultralytics.utils import SETTINGS

    root = own_root(yoloe_root, tmp_path)  # no cached embeddings: Ultralytics' own encoder must run
    client, _ = backend_client(make_settings, root, None)
    with client:
        response = client.post(
            "/predict",
            json={"tasks": [{"id": 1, "data": {"image": str(image)}}], "label_config": config(LABELS)},
        )
    assert 400 <= response.status_code < 500, response.text
    text = response.text
    assert "mobileclip2_b.ts" in text and str(SETTINGS["weights_dir"]) in text and "clip" in text, text


def test_prompted_copies_of_one_model_are_bounded(make_settings, yoloe_root, monkeypatch):
    from inference import model_registry

    monkeypatch.setattr(model_registry, "MAX_PROMPT_LISTS_PER_MODEL", 2)
    registry = model_registry.ModelRegistry(
        make_settings(model_root=yoloe_root), text_encoder=ChosenEmbeddings("a")
    )
    for prompts in (("a",), ("b",), ("c",)):
        assert registry.get(MODEL, prompts=prompts).class_names == {0: prompts[0]}
    assert sorted(registry.loaded()) == [f"{MODEL} (prompts: b)", f"{MODEL} (prompts: c)"]


@pytest.mark.parametrize(
    ("label_config", "message"),
    [
        (
            config(LABELS, extra="").replace('model_prompts="labels"', 'model_prompts="yes"'),
            'the only value is "labels"',
        ),
        (
            '<View><Image name="image" value="$image"/><Choices name="c" toName="image" model_prompts="labels">'
            '<Choice value="a"/></Choices></View>',
            "only RectangleLabels, PolygonLabels and BrushLabels",
        ),
    ],
)
def test_bad_model_prompts_get_a_4xx_that_says_why(client, image, label_config, message):
    response = client.post(
        "/predict", json={"tasks": [{"id": 1, "data": {"image": str(image)}}], "label_config": label_config}
    )
    assert response.status_code == 422 and message in response.json()["error"], response.text


def test_a_closed_set_model_with_model_prompts_is_refused(make_client, model_root, image):
    response = make_client().post(
        "/predict",
        json={
            "tasks": [{"id": 1, "data": {"image": str(image)}}],
            "label_config": config(LABELS, tags=("RectangleLabels",)).replace(MODEL, "yolov8m.pt"),
        },
    )
    assert response.status_code >= 400 and "not a text-promptable YOLOE model" in response.text, response.text


def test_the_try_it_page_prompts_with_whatever_labels_are_pasted(make_settings, yoloe_root, tmp_path):
    """/ui: a config with labels no model was trained on, an uploaded image: the regions carry the label
    whose prompt found them, and no label is reported as matching no class."""
    root = own_root(yoloe_root, tmp_path)
    client, _ = backend_client(make_settings, root, ChosenEmbeddings("wind turbine"))
    label_config = config(
        '<Label value="Turbine" predicted_values="wind turbine"/><Label value="solar panel"/>',
        tags=("RectangleLabels",),
    )
    png = cv2.imencode(".png", np.full((H, W, 3), 127, np.uint8))[1].tobytes()
    with client:
        response = client.post(
            "/ui/predict",
            data={"label_config": label_config},
            files={"file": ("field.png", png, "image/png")},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label_warnings"] == {} and body["control_errors"] == {} and body["task_error"] is None
    assert len(body["result"]) == 48
    assert {r["value"]["rectanglelabels"][0] for r in body["result"]} == {"Turbine"}
