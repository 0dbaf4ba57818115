"""Running models: the model registry (lazy loading, one lock per model), Ultralytics results as
plain arrays (`Detections`, `Classification`), and trackers. Imports only `core`."""
