"""What one /predict runs, between `YOLOBackend` (model.py) and the control models: the served
versions bound to their controls (`served.py`), controls grouped per model call (`groups.py`), the
image pipeline (`images.py`), the video pipeline (`videos.py`), the outcome (`run.py`), and the INT8
export calibrated on a project's images (`int8.py`). Imports `control_models` and the layers below."""
