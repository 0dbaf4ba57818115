"""The HTTP layer: routes, bodies, auth, metrics. Imports `model.py` and below; nothing imports it."""
