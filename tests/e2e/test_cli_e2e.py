"""cli.py against a real Label Studio 1.23.2: video tasks uploaded as files, predictions uploaded back.

Checks what the stand-in in tests/test_cli.py cannot: the SDK with a real personal access token, media
fetched from `/data/upload/...`, Label Studio accepting the `videorectangle` / `timelinelabels`
predictions, and `--all-tasks` finding only tasks without a prediction of this model version through
the Data Manager filter.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest
from label_studio_sdk.label_interface import LabelInterface

import cli
from tests.conftest import SHAPES_MODEL
from tools.shapes import draw_scene

from .label_studio import LabelStudioServer

pytestmark = pytest.mark.e2e

W, H, FRAMES, FPS = 320, 240, 30, 15.0
CONFIG = f"""
<View>
  <Video name="video" value="$video" frameRate="{FPS:g}"/>
  <Labels name="videoLabels" toName="video"><Label value="Circle" predicted_values="circle"/></Labels>
  <VideoRectangle name="box" toName="video" model_path="shapes-yolov8n.pt" model_tracker="bytetrack"/>
  <TimelineLabels name="timeline" toName="video" model_score_threshold="0">
    <Label value="Cat" predicted_values="tabby cat"/>
  </TimelineLabels>
</View>"""


def moving_circle_video(path: Path, offset: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for i in range(FRAMES):
        x = 20 + offset + 5 * i
        writer.write(draw_scene(W, H, [("circle", (x, 80, x + 60, 140), (30, 30, 230))], background_seed=5))
    writer.release()
    return path


def test_cli_uploads_video_predictions_and_resumes(
    label_studio: LabelStudioServer, make_settings, model_root: Path, tmp_path: Path, capsys
):
    if not (model_root / SHAPES_MODEL.name).exists():
        shutil.copy(SHAPES_MODEL, model_root / SHAPES_MODEL.name)
    api = label_studio.api
    project = api.create_project("cli videos", CONFIG)
    videos = [moving_circle_video(tmp_path / f"clip{i}.mp4", 30 * i) for i in range(2)]
    api.import_files(project["id"], videos[:1])
    argv = [
        "--ls-url",
        label_studio.url,
        "--ls-api-key",
        label_studio.personal_access_token,
        "--project",
        str(project["id"]),
        "--all-tasks",
    ]

    assert cli.main(argv, settings=make_settings()) == 0
    (first,) = api.list_predictions(project_id=project["id"])
    interface = LabelInterface(CONFIG)
    assert interface.validate_prediction({"result": first["result"]}, return_errors=True) == []
    kinds = sorted(region["type"] for region in first["result"])
    assert kinds == ["timelinelabels", "videorectangle"]
    track = next(r for r in first["result"] if r["type"] == "videorectangle")
    assert track["value"]["labels"] == ["Circle"] and track["value"]["framesCount"] == FRAMES
    assert len(track["value"]["sequence"]) >= 0.9 * FRAMES

    api.import_files(project["id"], videos[1:])  # a new task: only it is predicted on the next run
    capsys.readouterr()
    assert cli.main(argv, settings=make_settings()) == 0
    assert "1 task(s) to predict" in capsys.readouterr().err
    predictions = api.list_predictions(project_id=project["id"])
    assert sorted(p["task"] for p in predictions) == sorted(t["id"] for t in api.list_tasks(project["id"]))
    assert len({p["model_version"] for p in predictions}) == 1

    assert cli.main(argv, settings=make_settings()) == 0  # nothing left
    assert "0 task(s) to predict" in capsys.readouterr().err
    assert len(api.list_predictions(project_id=project["id"])) == 2
