"""The try-it page in a real headless Chromium (Debian's, driven by Playwright; scripts/test.sh installs it).

A real uvicorn server with the shapes model: upload a generated shapes image, see the boxes and labels
drawn, move the threshold slider, break the config. Screenshots land in pytest's tmp dir (path printed).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_ui import SHAPES_CONFIG
from tools.shapes import draw_shapes_image


def wait_until_true(page, expression: str, timeout_s: float = 30.0) -> None:
    """Wait until `expression` is true in the page. Playwright's own `wait_for_function` evaluates a string
    with `eval`, which the page's Content-Security-Policy forbids (as it should): this asks the page
    through `page.evaluate` (the DevTools protocol, outside the page's policy) every 50 ms."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"never true in the page: {expression}"
        page.wait_for_timeout(50)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
AUTH = {"username": "annotator", "password": "browser-secret-51c2"}


def serve(app):
    """Run `app` on a real uvicorn server in a thread; yields its URL."""
    import uvicorn

    # Port 0: the system picks a free one when uvicorn binds, so no other process can take it meanwhile.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def private_model_root(model_root: Path, tmp_path: Path) -> Path:
    """The session's models, hard-linked into a root of this test's own (a symlink would point out of the
    root, which the backend refuses): its jobs/ folder starts empty, while the session's root holds the
    jobs other tests started (the page shows them all)."""
    root = tmp_path / "models"
    root.mkdir()
    for model in model_root.glob("*.pt"):
        (root / model.name).hardlink_to(model)
    return root


@pytest.fixture
def app(make_settings, private_model_root: Path):
    from server.app import create_app

    settings = make_settings(
        basic_auth_user=AUTH["username"], basic_auth_pass=AUTH["password"], model_root=private_model_root
    )
    return create_app(settings)


@pytest.fixture
def server_url(app):
    yield from serve(app)


@pytest.fixture
def page(server_url):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), (
        "Debian chromium is missing: scripts/test.sh installs it (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(http_credentials=AUTH, viewport={"width": 1200, "height": 760})
        page = context.new_page()
        page.goto(f"{server_url}/ui")
        yield page
        browser.close()


@pytest.fixture
def shapes_file(tmp_path: Path) -> Path:
    image, _ = draw_shapes_image(np.random.default_rng(1234), width=480, height=360, n_shapes=3)
    path = tmp_path / "shapes.png"
    cv2.imwrite(str(path), image)
    return path


def set_threshold(page, value: float) -> None:
    page.eval_on_selector(
        "#threshold", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(value)
    )


def test_upload_draws_regions_slider_filters_and_config_error_shows(page, shapes_file, tmp_path):
    page.wait_for_selector("#models li.model")
    assert "shapes-yolov8n.pt" in page.inner_text("#models")
    page.wait_for_selector("#jobs-section:not([hidden])")  # /jobs answers: the section shows, empty
    assert "No jobs yet" in page.inner_text("#jobs")
    assert page.input_value("#config").startswith("<View>")  # an example is prefilled

    page.fill("#config", SHAPES_CONFIG)
    page.set_input_files("#file", str(shapes_file))
    page.click("#run")
    page.wait_for_selector("#overlay .region")
    regions = page.locator("#overlay .region")
    labels = [regions.nth(i).get_attribute("data-label") for i in range(regions.count())]
    assert len(labels) >= 2 and set(labels) <= {"circle", "square", "triangle"}, labels
    assert "model_version yolo-" in page.inner_text("#version")
    warning = page.inner_text("#messages .warning")
    assert "Dog" in warning and "circle, square, triangle" in warning
    texts = page.locator("#overlay text").all_text_contents()
    assert any(text.split()[0] in labels and float(text.split()[1]) > 0 for text in texts), texts
    shot = tmp_path / "ui-regions.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    scores = sorted(float(s) for s in page.locator("#regions tbody td:nth-child(4)").all_inner_texts())
    set_threshold(page, (scores[0] + scores[-1]) / 2 if scores[0] < scores[-1] else scores[0])
    wait_until_true(page, f"document.querySelectorAll('#overlay .region').length < {len(labels)}")
    set_threshold(page, 1)
    wait_until_true(page, "document.querySelectorAll('#overlay .region').length === 0")
    assert page.inner_text("#threshold-value") == "1.00"

    page.fill("#config", SHAPES_CONFIG.replace("</View>", ""))
    page.click("#run")
    page.wait_for_selector("#messages .error")
    assert "not a valid labeling config" in page.inner_text("#messages .error")
    assert page.locator("#overlay .region").count() == 0
    shot = tmp_path / "ui-config-error.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")


def test_jobs_section_shows_progress_and_cancels_and_starts_jobs(app, page, tmp_path):
    import os

    from training.jobs import Job, LocalProcessRunner, try_lock

    # Running jobs as their processes leave them: their locks held, then state files. The page polls /jobs
    # all along: the server sees the jobs only once both are there (a running job without its lock is a
    # dead one, and the poll's own look at a lock would make our try_lock fail).
    runner = LocalProcessRunner(tmp_path / "jobs", ["true"], predict_command=["true"])
    job = Job(id="job-1", project="7", control="label", state="running", phase="training")
    job.epoch, job.epochs, job.metrics, job.version = 3, 10, {"map50": 0.5}, "v2"
    predicting = Job(id="job-2", project="7", control="", kind="predict", state="running", phase="predicting")
    predicting.progress = {"done": 40, "total": 100, "failed": 5, "skipped": 5}
    locks = [try_lock(runner.files.lock_path("7", "label")), try_lock(runner._lock_path(predicting))]
    assert None not in locks
    runner.files.save(job)
    runner.files.save(predicting)
    app.state.backend.jobs = runner
    try:
        page.reload()
        page.wait_for_selector("#jobs li.job")
        text = page.inner_text("#jobs")
        assert "job-1" in text and "running" in text and "3/10 epochs" in text and "map50" in text
        assert "pre-label job-2" in text and "40/100 tasks, 5 failed, 5 skipped" in text
        values = [page.get_attribute(f"#jobs li:nth-child({i}) progress", "value") for i in (1, 2)]
        assert sorted(values) == ["0.3", "0.5"]
        page.click("#jobs li:has-text('job-2') button.cancel")  # a prediction job stops after its batch
        wait_until_true(page, "true")
        for _ in range(50):
            if runner.files.cancel_path("job-2").exists():
                break
            page.wait_for_timeout(100)
        assert runner.files.cancel_path("job-2").exists()
        # Starting one needs Label Studio's key here: the page says why it did not start.
        page.fill("#job-project", "7")
        page.click("#job-start")
        page.wait_for_selector("#job-message:has-text('Not started')")
        assert "LABEL_STUDIO_API_KEY" in page.inner_text("#job-message")
    finally:
        for lock in locks:
            os.close(lock)


def test_brush_rle_decodes_in_the_page_like_the_sdk(page):
    """The page's JS decoder of Label Studio's brush RLE gives the SDK's pixels back."""
    from label_studio_sdk.converter.brush import decode_rle, mask2rle

    mask = np.zeros((23, 37), dtype=np.uint8)
    mask[3:17, 5:30] = 255
    mask[10, :] = 255
    rle = mask2rle(mask)
    decoded = page.evaluate("rle => Array.from(decodeRLE(rle))", rle)
    assert decoded == decode_rle(rle).tolist()
    assert np.array_equal(np.array(decoded, dtype=np.uint8).reshape(23, 37, 4)[:, :, 3], mask)


VIDEO_W, VIDEO_H, VIDEO_FPS = 224, 160, 10.0


def circle_box(frame: int) -> tuple[float, float, float, float]:
    """(x, y, width, height) in pixels of the circle drawn in `frame` (1-based) of the test's clip."""
    return 20.0 + 6 * (frame - 1), 30.0, 56.0, 56.0


def drawn_box(page) -> tuple[float, ...]:
    rect = page.locator("#overlay .region[data-type=videorectangle] rect")
    assert rect.count() == 1, rect.count()
    return tuple(float(rect.get_attribute(name)) for name in ("x", "y", "width", "height"))


def answered_box(page, frame: int) -> tuple[float, ...]:
    """The backend's keyframe of the track at `frame`, in pixels."""
    (track,) = [r for r in page.evaluate("answer.result") if r["type"] == "videorectangle"]
    (key,) = [key for key in track["value"]["sequence"] if key["frame"] == frame]
    sizes = {"x": VIDEO_W, "y": VIDEO_H, "width": VIDEO_W, "height": VIDEO_H}
    return tuple(key[name] * size / 100 for name, size in sizes.items())


def test_video_upload_draws_the_track_on_the_frame_shown(page, tmp_path):
    """The box drawn over the frame the video shows is the backend's box for that frame, and that box is
    where the circle is in that frame (it moves 6 px a frame, so a box one frame off is seen)."""
    from tests.test_ui import VIDEO_CONFIG
    from tools.shapes import draw_scene

    path = tmp_path / "clip.webm"  # VP8: every Chromium build plays it
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), VIDEO_FPS, (VIDEO_W, VIDEO_H))
    for frame in range(1, 9):
        x, y, width, height = circle_box(frame)
        writer.write(draw_scene(VIDEO_W, VIDEO_H, [("circle", (x, y, x + width, y + height), (40, 200, 40))]))
    writer.release()

    page.fill("#config", VIDEO_CONFIG)
    page.set_input_files("#file", str(path))
    page.click("#run")
    page.wait_for_selector("#overlay .region[data-type=videorectangle][data-label=circle]")
    assert page.evaluate("document.querySelector('video').currentTime") == 0  # frame 1 is shown
    assert drawn_box(page) == pytest.approx(answered_box(page, 1), abs=1e-3)
    assert drawn_box(page) == pytest.approx(circle_box(1), abs=4)

    page.eval_on_selector("video", f"v => {{ v.currentTime = {4.5 / VIDEO_FPS}; }}")  # mid frame 5
    wait_until_true(
        page,
        f"Number(document.querySelector('#overlay .region rect')?.getAttribute('x')) > {circle_box(1)[0] + 12}",
    )
    assert drawn_box(page) == pytest.approx(answered_box(page, 5), abs=1e-3)
    assert drawn_box(page) == pytest.approx(circle_box(5), abs=4)
    shot = tmp_path / "ui-video.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")


def test_every_example_config_is_one_the_backend_plans_for(page, make_settings):
    from control_models import CONTROL_MODELS
    from control_models.labeling_plan import build_plan
    from server.ui_examples import BUNDLED_MODELS

    page.wait_for_selector("#example option", state="attached")
    examples = page.evaluate("EXAMPLES")
    options = page.locator("#example option").all_text_contents()
    assert options == list(examples) and len(examples) == 10
    tags = set()
    for name, config in examples.items():
        # Only the page's own examples may name a model, and only a bundled one (server/ui_examples.py).
        custom = any(f'model_path="{bundled}"' in config for bundled in BUNDLED_MODELS)
        plan = build_plan(config, make_settings(allow_custom_model_path=custom))
        tags |= {type(control).__name__ for control in plan.controls}
        assert plan.controls, name
    assert tags == {model.__name__ for model in CONTROL_MODELS}  # one example per control tag, OBB too


def test_every_region_type_is_drawn(page, shapes_file):
    """Regions of each kind, made by the backend's own converters, drawn over an uploaded image."""
    from converters import image_regions as make
    from converters.video_regions import timeline_regions

    w, h, common = 480, 360, {"from_name": "c", "to_name": "image"}
    size = {"image_width": w, "image_height": h}
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[100:200, 50:150] = 1
    probs = np.array([[0.9], [0.9], [0.1]])
    regions = [
        make.oriented_rectangle_region(
            **common, **size, label="obb", xywhr=np.array([240, 180, 100, 40, 0.5]), score=0.9
        ),
        make.polygon_region(
            **common, **size, label="poly", points=np.array([[10, 10], [100, 10], [50, 90]]), score=0.8
        ),
        make.brush_region(**common, label="brush", mask=mask, score=0.7),
        make.keypoint_region(**common, **size, label="nose", x=300, y=50, score=0.6, point_size=1.0),
        make.choices_region(**common, choices=["cat"], score=0.95),
        make.taxonomy_region(**common, paths=[["Animal", "Dog"]], score=0.5),
        *timeline_regions(
            from_name="t", to_name="video", probs=probs, labels=["run"], threshold=0.5, frames_count=3
        ),
    ]
    page.set_input_files("#file", str(shapes_file))
    page.evaluate(
        "regions => { answer = {result: regions}; showMedia(document.querySelector('#file').files[0]); }",
        regions,
    )
    page.wait_for_selector("#overlay .region[data-type=brushlabels]")
    drawn = {
        el.get_attribute("data-type"): el.get_attribute("data-label") for el in page.locator(".region").all()
    }
    assert drawn == {
        "rectanglelabels": "obb",
        "polygonlabels": "poly",
        "brushlabels": "brush",
        "keypointlabels": "nose",
        "choices": "cat",
        "taxonomy": "Animal / Dog",
        "timelinelabels": "run",
    }
    assert "rotate(" in page.get_attribute("#overlay .region[data-type=rectanglelabels]", "transform")
    brush = page.get_attribute("#overlay image", "href")
    assert brush.startswith("data:image/png;base64,") and len(brush) > 200
    set_threshold(page, 0.75)
    wait_until_true(page, "!document.querySelector('.region[data-type=brushlabels]')")
    remaining = {el.get_attribute("data-type") for el in page.locator(".region").all()}
    assert remaining == {"rectanglelabels", "polygonlabels", "choices", "timelinelabels"}
    page.screenshot(path=str(shapes_file.parent / "ui-all-types.png"), full_page=True)
    print(f"screenshot: {shapes_file.parent / 'ui-all-types.png'}")
