"""The inference path uses the whole machine and keeps Ultralytics' predictor between calls."""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import torch

from inference.model_registry import ModelRegistry


def test_inference_runs_with_every_core_in_the_calling_thread(make_settings, bus_image):
    registry = ModelRegistry(make_settings(torch_threads=0))
    model = registry.get("yolov8m.pt")
    assert model.threads == (os.cpu_count() or 1)
    seen = []
    original = model.yolo.predict

    def recording_predict(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    model.yolo.predict = recording_predict
    image = cv2.imread(str(bus_image))

    def worker():
        torch.set_num_threads(1)  # what Ultralytics leaves after setting up a predictor
        model.predict([image, image], batch_size=1, conf=0.25)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [os.cpu_count() or 1] * 2


def test_the_predictor_is_set_up_once_not_per_call(make_settings, bus_image, monkeypatch):
    """Ultralytics rebuilds (and deep-copies) its predictor when a setup argument such as `device`
    differs from the last call's; an empty DEVICE must not cause that on every call."""
    from ultralytics.engine.predictor import BasePredictor

    model = ModelRegistry(make_settings(device="")).get("yolov8m.pt")
    image = cv2.imread(str(bus_image))
    model.predict([image], batch_size=1, conf=0.25)
    setups = []
    original = BasePredictor.setup_model
    monkeypatch.setattr(
        BasePredictor, "setup_model", lambda self, *a, **k: setups.append(1) or original(self, *a, **k)
    )
    for _ in range(3):
        model.predict([image], batch_size=1, conf=0.25)
    assert setups == []


def test_images_of_one_shape_share_a_batch(make_settings, bus_image, zidane_image):
    # A large latency factor: batches as large as allowed, whatever this machine measures.
    model = ModelRegistry(make_settings(batch_latency_factor=1000, batch_min_gain=0)).get("yolov8m.pt")
    bus, zidane = cv2.imread(str(bus_image)), cv2.imread(str(zidane_image))
    batches = []
    original = model.yolo.predict
    model.yolo.predict = lambda images, **kwargs: (
        batches.append([i.shape for i in images]) or original(images, **kwargs)
    )
    results = model.predict([bus, zidane, bus, zidane, bus], batch_size=8, conf=0.25)
    assert sorted(len(batch) for batch in batches) == [2, 3]
    assert all(len(set(batch)) == 1 for batch in batches)
    assert [r.orig_shape for r in results] == [bus.shape[:2], zidane.shape[:2]] * 2 + [bus.shape[:2]]


def test_concurrent_requests_get_what_they_get_alone(make_settings, bus_image, zidane_image):
    model = ModelRegistry(make_settings()).get("shapes-yolov8n.pt")
    bus, zidane = cv2.imread(str(bus_image)), cv2.imread(str(zidane_image))
    requests = {"bulk": [bus, zidane] * 4 + [bus], "single": [zidane], "pair": [bus, bus]}
    alone = {name: model.predict(images, conf=0.01) for name, images in requests.items()}
    together: dict = {}
    threads = [
        threading.Thread(target=lambda n=name, i=images: together.update({n: model.predict(i, conf=0.01)}))
        for name, images in requests.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, results in alone.items():
        assert len(together[name]) == len(results)
        for got, expected in zip(together[name], results, strict=True):
            assert got.orig_shape == expected.orig_shape
            assert got.boxes.cls.tolist() == expected.boxes.cls.tolist()
            assert torch.allclose(got.boxes.xyxy, expected.boxes.xyxy, atol=0.5)


def test_cuda_devices_get_half_precision_and_larger_batches(make_settings, monkeypatch):
    from inference import model_registry

    assert model_registry.uses_cuda("0") and model_registry.uses_cuda("cuda:1")
    assert not model_registry.uses_cuda("cpu") and not model_registry.uses_cuda("mps")
    cpu = ModelRegistry(make_settings(device="cpu")).get("yolov8m.pt")
    assert (cpu.half, cpu.batch_size, cpu.scheduler.lanes) == (False, 8, 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = ModelRegistry(make_settings(device="")).get("yolov8m.pt")
    assert (gpu.half, gpu.batch_size, gpu.scheduler.lanes) == (True, 32, 1)
    calls = []
    gpu.yolo.predict = lambda images, **kwargs: calls.append(kwargs) or [None] * len(images)
    gpu.predict([np.zeros((32, 32, 3), np.uint8)])
    assert calls[0]["quantize"] == 16
    assert ModelRegistry(make_settings(device="0", inference_batch_size=4)).get("yolov8m.pt").batch_size == 4


def test_a_second_lane_gets_its_own_copy_of_the_model_when_first_used(make_settings, bus_image):
    """An Ultralytics predictor keeps per-call state, so two requests running at once need two copies;
    the copy is made only when a second lane is first used, and answers what the model answers."""
    model = ModelRegistry(make_settings(device="cpu")).get("shapes-yolov8n.pt")
    assert model.scheduler.lanes == 2 and model._replicas == []
    copy = model.replica(1)
    assert copy is not model.yolo and model.replica(1) is copy and model.replica(0) is model.yolo
    image = cv2.imread(str(bus_image))
    own, copied = model.yolo.predict(image, conf=0.01)[0], copy.predict(image, conf=0.01)[0]
    assert copied.names == own.names
    assert copied.boxes.cls.tolist() == own.boxes.cls.tolist()
    assert torch.allclose(copied.boxes.xyxy, own.boxes.xyxy, atol=0.5)
    one_lane = ModelRegistry(make_settings(device="cpu", model_lanes=1)).get("shapes-yolov8n.pt")
    assert one_lane.scheduler.lanes == 1


def test_a_request_of_several_images_builds_the_second_lane_copy_in_the_background(make_settings, bus_image):
    """A task opened beside a bulk request must not wait for a copy to load: the first request of several
    images starts the copy (built and run once off the request's path); a one-image request does not."""
    registry = ModelRegistry(make_settings(device="cpu"))
    model = registry.get("shapes-yolov8n.pt")
    image = cv2.imread(str(bus_image))
    model.predict([image])
    assert model._copier is None and model._replicas == []
    built = []
    replicate = model.replicate
    model.replicate = lambda: built.append(1) or replicate()
    model.predict([image, image, image])
    assert model.wait_for_copies(timeout=60)
    copy = model.replica(1)
    assert built == [1] and copy.predictor is not None  # set up by a call, before any lane asked
    model.predict([image, image])
    assert built == [1] and model.replica(1) is copy
    # A job's process serves one request at a time: its model is never copied.
    job = ModelRegistry(make_settings(device="cpu").for_job_process()).get("shapes-yolov8n.pt")
    job.predict([image, image])
    assert job.scheduler.lanes == 1 and job._copier is None and job._replicas == []
