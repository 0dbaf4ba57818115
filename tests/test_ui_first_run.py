"""A newcomer's first minute on the try-it page, in a real headless Chromium (issue 21).

A fresh MODEL_ROOT holding only the bundled `shapes-yolov8n.pt`, the server's default settings (custom
model paths off, downloads on but offline): open /ui, the first example is ready, one click predicts the
sample image the page serves, and the three shapes are drawn with their labels. The other examples say
which weights they need and where to put them; the page offers the weight files it finds.
"""

from __future__ import annotations

import pytest

from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, serve, wait_until_true


@pytest.fixture
def first_run_url(make_settings, own_model_root):
    from server.app import create_app

    settings = make_settings(
        true_defaults=True,
        model_root=own_model_root,
        allow_custom_model_path=False,
        allow_model_download=None,
    )
    yield from serve(create_app(settings))


@pytest.fixture
def page(first_run_url):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), (
        "Debian chromium is missing: scripts/test.sh installs it (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        page.goto(f"{first_run_url}/ui")
        yield page
        browser.close()


def test_first_example_and_its_sample_show_boxes_on_a_fresh_model_root(page, tmp_path):
    page.wait_for_selector("#example option", state="attached")
    assert page.input_value("#example").startswith("Shapes")  # the first example is the one selected
    assert 'model_path="shapes-yolov8n.pt"' in page.input_value("#config")
    assert "Uses shapes-yolov8n.pt" in page.inner_text("#example-note")

    page.click("#sample")  # the one click: the page fetches its sample image and predicts it
    wait_until_true(page, "document.querySelectorAll('#overlay .region').length === 3")
    labels = page.locator("#overlay .region").evaluate_all("nodes => nodes.map(n => n.dataset.label)")
    assert sorted(labels) == ["circle", "square", "triangle"]
    assert page.locator("#messages .error").count() == 0
    assert page.locator("#stage img").get_attribute("alt") == "shapes.jpg"
    assert "model_version yolo-" in page.inner_text("#version")
    shot = tmp_path / "ui-first-run.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")


def test_other_examples_say_what_they_need_and_the_page_offers_the_files_it_finds(page, own_model_root):
    page.wait_for_selector("#example option", state="attached")
    page.select_option("#example", "RectangleLabels")
    note = page.inner_text("#example-note")
    assert "yolov8m.pt" in note and str(own_model_root) in note, note
    assert page.locator("#sample").is_hidden()  # no sample for an example that cannot run here

    page.wait_for_selector("#models li.model button.use-model")
    page.click("#models button.use-model[data-model='shapes-yolov8n.pt']")
    assert 'model_path="shapes-yolov8n.pt"' in page.input_value("#config")
    assert "ALLOW_CUSTOM_MODEL_PATH" in page.inner_text("#messages .warning")
