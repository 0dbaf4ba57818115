"""Pure conversions from model geometry (pixels, numpy) to Label Studio result regions.

``converters.geometry`` holds the coordinate math (numpy only); ``converters.image_regions`` wraps it
into Label Studio region dicts. Nothing here loads a model or imports Ultralytics. Import from the
submodules, so that using the geometry alone does not pull in the Label Studio SDK.
"""
