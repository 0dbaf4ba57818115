"""cli.py against the shared stand-in for Label Studio's API (tests/label_studio_stand_in.py), which
records every call."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

import cli
from media.label_studio_client import LabelStudioClient
from model import YOLOBackend
from tests.conftest import SHAPES_MODEL, assert_nearly_equal
from tests.label_studio_stand_in import LEGACY_KEY, StandInLabelStudio
from tests.label_studio_stand_in import fake_jwt as stand_in_jwt
from tools.shapes import draw_shapes_image

PROJECT = 7
CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt">
    <Label value="Circle" predicted_values="circle"/><Label value="Square" predicted_values="square"/>
    <Label value="Triangle" predicted_values="triangle"/>
  </RectangleLabels>
</View>"""


def fake_jwt(token_type: str, lifetime: float = 3600) -> str:
    return stand_in_jwt(
        {"token_type": token_type, "exp": int(time.time() + lifetime), "jti": f"{time.time_ns()}"}
    )


def project_stand_in(tasks: list[dict], media: dict[str, Path]) -> StandInLabelStudio:
    """The shared stand-in with project PROJECT and CONFIG; refreshes no personal access token until a
    test sets its `refresh_token`."""
    return StandInLabelStudio(
        tasks=tasks, media=media, project=PROJECT, label_config=CONFIG, refresh_token=""
    )


@pytest.fixture
def images(tmp_path, model_root) -> dict[str, Path]:
    """Three shapes images, one of them missing; the shapes detector in MODEL_ROOT."""
    if not (model_root / SHAPES_MODEL.name).exists():
        shutil.copy(SHAPES_MODEL, model_root / SHAPES_MODEL.name)
    rng = np.random.default_rng(4242)
    paths = {}
    for name in ("first", "second"):
        image, _ = draw_shapes_image(rng, n_shapes=3)
        paths[name] = tmp_path / f"{name}.png"
        cv2.imwrite(str(paths[name]), image)
    paths["missing"] = tmp_path / "missing.png"
    return paths


@pytest.fixture
def project_tasks(images) -> list[dict]:
    return [
        {"id": 1, "project": PROJECT, "data": {"image": str(images["first"])}},
        {"id": 2, "project": PROJECT, "data": {"image": str(images["missing"])}},
        {"id": 3, "project": PROJECT, "data": {"image": "/data/upload/7/second.png"}},
    ]


@pytest.fixture
def label_studio(project_tasks, images):
    with project_stand_in(project_tasks, {"/data/upload/7/second.png": images["second"]}) as stand_in:
        yield stand_in


def run_cli(make_settings, label_studio, *args: str, key: str = LEGACY_KEY) -> int:
    argv = ["--ls-url", label_studio.url, "--ls-api-key", key, "--project", str(PROJECT), *args]
    return cli.main(argv, settings=make_settings())


def test_task_ids_are_predicted_uploaded_and_failures_reported(make_settings, label_studio, capsys):
    status = run_cli(make_settings, label_studio, "--tasks", "1,2,3,99")
    out = capsys.readouterr().out
    assert status == 1
    uploaded = {p["task"]: p for p in label_studio.predictions}
    assert sorted(uploaded) == [1, 3]  # task 3's image came from Label Studio itself, with the key
    for prediction in uploaded.values():
        assert prediction["model_version"].startswith("yolo-")
        assert len(prediction["result"]) == 3  # the three shapes of each image
        assert 0.5 <= prediction["score"] <= 1.0
        assert LabelInterface(CONFIG).validate_prediction(prediction, return_errors=True) == []
    assert "2 of 4 task(s) predicted" in out
    assert "task 2: " in out and "does not exist" in out
    assert "task 99: could not be fetched" in out and "404" in out
    assert ("GET", "/data/upload/7/second.png") in [(m, p) for m, p, _, _ in label_studio.calls]


def test_same_predictions_as_the_server(make_settings, make_client, label_studio, project_tasks):
    assert run_cli(make_settings, label_studio, "--tasks", "1") == 0
    response = make_client().post("/predict", json={"tasks": [project_tasks[0]], "label_config": CONFIG})
    served = response.json()["results"][0]
    (uploaded,) = label_studio.predictions
    assert uploaded["model_version"] == served["model_version"]
    strip = lambda regions: [{k: v for k, v in r.items() if k != "id"} for r in regions]  # noqa: E731
    assert len(served["result"]) == 3
    assert_nearly_equal(strip(uploaded["result"]), strip(served["result"]))


def test_all_tasks_skips_tasks_done_by_this_model_version_and_resumes(make_settings, label_studio, capsys):
    label_studio.refuse_upload_for = {3}
    assert run_cli(make_settings, label_studio, "--all-tasks") == 1  # 2: missing image, 3: upload refused
    out = capsys.readouterr().out
    assert "task 3: upload failed: could not store a prediction for task 3 at Label Studio" in out
    assert "HTTP 400: result is not valid" in out
    assert [p["task"] for p in label_studio.predictions] == [1]

    label_studio.refuse_upload_for = set()
    label_studio.tasks[2]["data"]["image"] = label_studio.tasks[1]["data"]["image"]  # fixed by the user
    assert run_cli(make_settings, label_studio, "--all-tasks") == 0
    assert sorted(p["task"] for p in label_studio.predictions) == [1, 2, 3]  # 1 is not predicted twice

    assert run_cli(make_settings, label_studio, "--all-tasks") == 0
    assert "0 task(s) to predict" in capsys.readouterr().err
    assert len(label_studio.predictions) == 3


def test_dry_run_writes_predictions_and_uploads_nothing(make_settings, label_studio, project_tasks, tmp_path):
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps([project_tasks[0], project_tasks[2]]))
    out = tmp_path / "predictions.json"
    assert run_cli(make_settings, label_studio, "--tasks", str(tasks_file), "--dry-run", str(out)) == 0
    written = json.loads(out.read_text())
    assert [p["task"] for p in written] == [1, 3]
    assert all({"model_version", "score", "result"} <= set(p) for p in written)
    assert label_studio.paths("POST") == []
    assert not any(path.startswith("/api/tasks/") for path in label_studio.paths("GET"))  # data was given


def test_personal_access_token_is_exchanged_for_access_tokens(make_settings, label_studio):
    label_studio.refresh_token = fake_jwt("refresh")
    assert run_cli(make_settings, label_studio, "--tasks", "1,3", key=label_studio.refresh_token) == 0
    assert sorted(p["task"] for p in label_studio.predictions) == [1, 3]
    assert "/api/token/refresh/" in label_studio.paths("POST")


def test_wrong_key_stops_before_any_prediction(make_settings, label_studio, capsys):
    assert run_cli(make_settings, label_studio, "--tasks", "1", key="f" * 40) == 2
    assert "HTTP 401" in capsys.readouterr().err
    assert label_studio.predictions == []


@pytest.mark.parametrize(
    ("tasks", "message"),
    [("1,x", "neither a file nor task ids"), ("[]", "holds no tasks"), ('[{"id": 1}]', "every item")],
)
def test_bad_task_lists_are_refused(make_settings, label_studio, tmp_path, capsys, tasks, message):
    if tasks.startswith("["):
        path = tmp_path / "tasks.json"
        path.write_text(tasks)
        tasks = str(path)
    assert run_cli(make_settings, label_studio, "--tasks", tasks) == 2
    assert message in capsys.readouterr().err


def test_a_bad_task_in_a_file_is_named_with_its_field(make_settings, label_studio, tmp_path, capsys):
    """The file's tasks are checked by the `core.tasks.Task` model: the message says which field is wrong."""
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([{"id": 1, "data": {"image": "a.png"}}, {"id": 2, "data": ["b.png"]}]))
    assert run_cli(make_settings, label_studio, "--tasks", str(path)) == 2
    assert "item 1.data: Input should be a valid dictionary" in capsys.readouterr().err


def test_label_studio_address_and_key_default_to_the_settings(make_settings, label_studio, monkeypatch):
    """One `Settings` for the server and the CLI: the CLI reads no environment variable of its own."""
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    settings = make_settings(label_studio_url=label_studio.url, label_studio_api_key=LEGACY_KEY)
    assert cli.main(["--project", str(PROJECT), "--tasks", "1"], settings=settings) == 0
    assert [p["task"] for p in label_studio.predictions] == [1]


def test_command_line_help_runs():
    result = subprocess.run(
        [sys.executable, "cli.py", "--help"], cwd=Path(cli.__file__).parent, capture_output=True, text=True
    )
    assert result.returncode == 0 and "--all-tasks" in result.stdout and "--dry-run" in result.stdout
    for command in ("predict", "train", "evaluate", "models", "export-int8"):
        assert f"\n    {command} " in result.stdout or f"\n    {command}\n" in result.stdout, command


def test_the_form_without_a_command_is_predict(make_settings):
    """`cli.py --project 1 --tasks 1,2` (the form before subcommands) parses as `predict`."""
    parser = cli.build_parser(make_settings())
    options = ["--project", "1", "--tasks", "1,2", "--ls-url", "http://ls", "--ls-api-key", "k"]
    old, new = (
        parser.parse_args(cli.with_default_command(argv)) for argv in (options, ["predict", *options])
    )
    assert vars(old) == vars(new) and old.command == "predict" and old.tasks == "1,2"


@pytest.fixture
def predict_calls(monkeypatch) -> list[list]:
    """Every `YOLOBackend.predict` call the CLI makes: the task ids of each batch."""
    calls: list[list] = []
    real_predict = YOLOBackend.predict

    def counting_predict(self, tasks, *args, **kwargs):
        calls.append([task["id"] for task in tasks])
        return real_predict(self, tasks, *args, **kwargs)

    monkeypatch.setattr(YOLOBackend, "predict", counting_predict)
    return calls


@pytest.mark.parametrize("batch_size", ["1", "2"])
def test_a_task_without_the_data_key_fails_alone(
    make_settings, label_studio, predict_calls, batch_size, capsys
):
    """Issue 13's bug: a task whose data lacks the config's key (`img` for `image`) stopped the whole run
    and marked every later task failed with its message; now it is that task's error only."""
    label_studio.tasks[2]["data"] = {"img": label_studio.tasks[1]["data"]["image"]}
    label_studio.tasks[4] = {"id": 4, "project": PROJECT, "data": dict(label_studio.tasks[1]["data"])}
    status = run_cli(make_settings, label_studio, "--tasks", "2,1,3,4", "--batch-size", batch_size)
    out = capsys.readouterr().out
    assert status == 1
    assert sorted(p["task"] for p in label_studio.predictions) == [1, 3, 4]
    assert "3 of 4 task(s) predicted" in out
    assert "task 2: " in out and "'image'" in out
    assert "task 1: " not in out and "task 3: " not in out and "task 4: " not in out
    size = int(batch_size)
    assert predict_calls == [[2, 1, 3, 4][i : i + size] for i in range(0, 4, size)]  # every batch ran


@pytest.mark.parametrize("batch_size", ["1", "2"])
def test_bad_labeling_config_stops_after_the_first_batch(
    make_settings, label_studio, predict_calls, batch_size, tmp_path, capsys
):
    """A model that cannot load spoils every task alike: the run stops after one call (not one per batch)."""
    config = tmp_path / "config.xml"
    config.write_text(CONFIG.replace('model_path="shapes-yolov8n.pt"', 'model_path="nope.pt"'))
    args = ("--tasks", "1,3", "--label-config", str(config), "--batch-size", batch_size)
    assert run_cli(make_settings, label_studio, *args) == 1
    out = capsys.readouterr().out
    assert "task 1: " in out and "task 3: " in out and "nope.pt" in out
    assert len(predict_calls) == 1
    assert label_studio.predictions == []


@pytest.mark.parametrize("batch_size", ["1", "2"])
def test_an_interrupted_run_resumes_with_the_rest(
    make_settings, label_studio, predict_calls, batch_size, monkeypatch
):
    """A run killed after its first upload: the next --all-tasks run predicts only the tasks not uploaded."""
    label_studio.tasks[2]["data"]["image"] = label_studio.tasks[1]["data"]["image"]
    real_upload = LabelStudioClient.create_prediction

    def upload_then_die(self, *prediction):
        real_upload(self, *prediction)
        raise KeyboardInterrupt  # as Ctrl-C or a killed process would, right after the first upload

    monkeypatch.setattr(LabelStudioClient, "create_prediction", upload_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_cli(make_settings, label_studio, "--all-tasks", "--batch-size", batch_size)
    assert [p["task"] for p in label_studio.predictions] == [1]

    monkeypatch.setattr(LabelStudioClient, "create_prediction", real_upload)
    predict_calls.clear()
    assert run_cli(make_settings, label_studio, "--all-tasks", "--batch-size", batch_size) == 0
    assert sorted(p["task"] for p in label_studio.predictions) == [1, 2, 3]
    assert sorted(i for call in predict_calls for i in call) == [2, 3]  # task 1 is not predicted again


def test_cli_refuses_a_weight_file_that_runs_code(tmp_path, small_image):
    """`python cli.py` as a user runs it (no ULTRALYTICS_SAFE_LOAD in the environment): a `.pt` whose
    unpickling would run code is refused with a message naming the file, and its code never runs."""
    import os

    from tests.known_models import write_code_running_weights

    marker = tmp_path / "code-ran"
    write_code_running_weights(tmp_path / "models" / "evil.pt", marker)
    config = tmp_path / "config.xml"
    config.write_text(CONFIG.replace("shapes-yolov8n.pt", "evil.pt"))
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps([{"id": 1, "data": {"image": str(small_image)}}]))
    env = {k: v for k, v in os.environ.items() if k != "ULTRALYTICS_SAFE_LOAD"}
    env.update(MODEL_ROOT=str(tmp_path / "models"), ALLOW_CUSTOM_MODEL_PATH="true", YOLO_OFFLINE="1")
    args = ["--project", "1", "--tasks", str(tasks), "--label-config", str(config)]
    result = subprocess.run(
        [sys.executable, "cli.py", *args, "--dry-run", str(tmp_path / "out.json")],
        cwd=Path(cli.__file__).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not marker.exists(), "unpickling the weight file ran its code"
    assert result.returncode == 1, result.stdout + result.stderr
    assert "task 1: " in result.stdout
    assert "'evil.pt' could not be loaded as an Ultralytics YOLO model" in result.stdout


@pytest.fixture
def small_image(tmp_path) -> Path:
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.full((64, 96, 3), 90, np.uint8))
    return path


# -- export-int8 -----------------------------------------------------------------------------------------


def shapes_project(folder: Path, count: int, seed: int = 5) -> tuple[list[dict], dict[str, Path]]:
    """`count` tasks whose shapes images Label Studio serves under /data/upload/7/."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    tasks, media = [], {}
    for number in range(count):
        image, _ = draw_shapes_image(rng)
        path = folder / f"shapes-{number}.png"
        cv2.imwrite(str(path), image)
        media[f"/data/upload/{PROJECT}/{path.name}"] = path
        tasks.append(
            {"id": 100 + number, "project": PROJECT, "data": {"image": f"/data/upload/{PROJECT}/{path.name}"}}
        )
    return tasks, media


def export_int8_cli(make_settings, label_studio, model_root: Path, *args: str) -> int:
    argv = [
        "export-int8",
        "--ls-url",
        label_studio.url,
        "--ls-api-key",
        LEGACY_KEY,
        "--project",
        str(PROJECT),
    ]
    return cli.main([*argv, *args], settings=make_settings(model_root=model_root))


@pytest.mark.slow
def test_export_int8_calibrates_on_the_project_images_and_the_server_serves_it(
    make_settings, make_client, own_model_root, tmp_path, monkeypatch, capsys
):
    from ultralytics.engine.exporter import Exporter

    from inference.int8_export import Int8Check, export_dir

    tasks, media = shapes_project(tmp_path / "project", 11)
    tasks.append({"id": 200, "project": PROJECT, "data": {"image": f"/data/upload/{PROJECT}/gone.png"}})
    calibrated_on: list[int] = []
    real_loader = Exporter.get_int8_calibration_dataloader

    def recording_loader(self, *args, **kwargs):
        loader = real_loader(self, *args, **kwargs)
        calibrated_on.append(len(loader.dataset))
        return loader

    monkeypatch.setattr(Exporter, "get_int8_calibration_dataloader", recording_loader)
    with project_stand_in(tasks, media) as label_studio:
        assert export_int8_cli(make_settings, label_studio, own_model_root, "--limit", "10") == 0
        out = capsys.readouterr().out
        fetched = [path for path in label_studio.paths("GET") if path.startswith("/data/upload/")]

        target = export_dir(own_model_root / SHAPES_MODEL.name)
        check = Int8Check(**json.loads((target / "int8_check.json").read_text()))
        assert check.metric == "mAP50-95 vs the .pt's boxes"  # no labels: agreement with the .pt itself
        assert check.drop_points <= 1.0
        assert check.calibration_images + check.held_out_images == 10  # --limit; the missing one left out
        assert calibrated_on == [check.calibration_images]  # calibrated on those, not the held-out ones
        assert "made now from 10 of the project's images" in out and str(target) in out
        assert len(fetched) >= 10
        assert sorted(p.name for p in own_model_root.iterdir()) == sorted([SHAPES_MODEL.name, target.name])

        # Run again: the export is kept as it is and no image is fetched.
        stamp = (target / "int8_check.json").stat().st_mtime_ns
        assert export_int8_cli(make_settings, label_studio, own_model_root) == 0
        assert "already made before" in capsys.readouterr().out
        assert [p for p in label_studio.paths("GET") if p.startswith("/data/upload/")] == fetched
        assert (target / "int8_check.json").stat().st_mtime_ns == stamp

    # A server with MODEL_FORMAT=openvino-int8 and no calibration folder serves that export at once.
    client = make_client(model_root=own_model_root, model_format="openvino-int8")
    task = {"id": 1, "data": {"image": str(media[tasks[0]["data"]["image"]])}}
    response = client.post("/predict", json={"tasks": [task], "label_config": CONFIG})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["results"]
    assert prediction["result"], prediction  # the shapes were found
    assert LabelInterface(CONFIG).validate_prediction(prediction, return_errors=True) == []
    assert client.get("/health").json()["loaded_models"] == {"shapes-yolov8n.pt (openvino-int8)": "detect"}
    assert (target / "int8_check.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("case", ["no tasks", "no usable image"])
def test_export_int8_without_project_images_is_refused_and_writes_nothing(
    make_settings, own_model_root, tmp_path, monkeypatch, capsys, case
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the calibration folder goes
    (tmp_path / "tmp").mkdir()
    tasks, media = shapes_project(tmp_path / "project", 3)
    if case == "no tasks":
        tasks = []
    else:
        (tmp_path / "not-an-image.png").write_bytes(b"no pixels here")
        media = {tasks[0]["data"]["image"]: tmp_path / "not-an-image.png"}  # the others are gone
    with project_stand_in(tasks, media) as label_studio:
        assert export_int8_cli(make_settings, label_studio, own_model_root) == 1
    out = capsys.readouterr().out
    assert f"0 of {len(tasks)} task(s) gave an image for label" in out
    assert "at least 8 images" in out and "never calibrated on random data" in out
    if case == "no usable image":
        assert "left out: task 100: " in out and "decoded" in out
    assert list(own_model_root.iterdir()) == [own_model_root / SHAPES_MODEL.name]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_export_int8_refuses_a_control_the_config_does_not_have(make_settings, own_model_root, capsys):
    with project_stand_in([], {}) as label_studio:
        assert export_int8_cli(make_settings, label_studio, own_model_root, "--control", "nope") == 2
    assert "no control named nope" in capsys.readouterr().err
