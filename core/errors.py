"""Errors that reach the user, each with the HTTP status it deserves.

Anything raised as a `BackendError` is shown to the caller as `{"error": message}` with its status;
every other exception is a bug: logged with its traceback, answered with a bare 500.
"""

from __future__ import annotations


class BackendError(Exception):
    status_code = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequestError(BackendError):
    """The request body is not what Label Studio sends."""

    status_code = 400


class LabelingConfigError(BackendError):
    """The labeling config cannot be used as it is; the message says what to change."""

    status_code = 422


class ModelError(BackendError):
    """A control's model cannot be used; the subclasses say why."""

    status_code = 422


class ModelLoadError(ModelError):
    """A weight file is missing, refused, corrupt, or its export failed."""


class WrongModelKindError(ModelError):
    """The model loaded, but its task (detect, segment, ...) is not one its control tag can use."""


class MediaError(BackendError):
    """A task's image or video could not be fetched or decoded. Spoils that task only."""

    status_code = 422


class LabelStudioAccessError(BackendError):
    """Label Studio refused our API key or could not be reached."""

    status_code = 502


class ServerConfigurationError(BackendError):
    """This backend lacks a setting the request needs (e.g. Label Studio's address and key for training).
    Neither the caller's fault (4xx) nor Label Studio's answer (502): the server is not set up for it."""

    status_code = 503


class TrainingDataError(BackendError):
    """The project's annotations are not enough to train on; the message says what is missing."""

    status_code = 422


class TooManyJobsError(BackendError):
    """More jobs wait on this host than it queues (TRAINING_MAX_QUEUED); try again when some have run."""

    status_code = 429


class ConfigConflictError(BackendError):
    """A request carries a labeling config that differs from the project's own in Label Studio."""

    status_code = 409
