"""Pure conversions from model geometry (pixels, numpy) to Label Studio result regions.

``converters.geometry`` holds the coordinate math (numpy only); ``converters.regions`` builds the one
Label Studio region dict that ``converters.image_regions`` and ``converters.video_regions`` return. Nothing here loads a model or imports Ultralytics. Import from the
submodules, so that using the geometry alone does not pull in the Label Studio SDK.
"""
