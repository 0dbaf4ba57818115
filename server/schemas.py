"""Request and response bodies of the ML backend protocol, as Label Studio 1.23 sends and reads them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import LabelingConfigError
from core.tasks import Task


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    project: str | int | None = None
    schema_: str = Field(default="", alias="schema", description="The project's labeling config.")
    hostname: str | None = None
    access_token: str | None = Field(default=None, repr=False)
    extra_params: Any = None

    @field_validator("hostname")
    @classmethod
    def _http_origin(cls, hostname: str | None) -> str | None:
        """Label Studio's address as it sends it ("http://localhost:8080"): media and its key go there."""
        if not hostname:
            return hostname
        parsed = urlparse(hostname)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("hostname must be Label Studio's http(s) address, e.g. http://localhost:8080")
        return hostname

    def labeling_config(self) -> str:
        """The config to answer a version for. None is a 422: the version of an empty config would look
        valid and match no /predict."""
        if self.schema_.strip():
            return self.schema_
        sent = sorted((self.model_extra or {}).keys() & {"label_config", "config", "labeling_config"})
        hint = f"; this body has '{sent[0]}', which is /predict's name for it" if sent else ""
        raise LabelingConfigError(
            "/setup needs the project's labeling config in 'schema' (Label Studio sends it there)" + hint
        )


class SetupResponse(BaseModel):
    model_version: str


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    tasks: list[Task] = Field(min_length=1)
    label_config: str = Field(min_length=1)
    project: str | int | None = None
    # login, password (kept out of reprs and logs), context: not used by this backend
    params: dict[str, Any] | None = Field(default=None, repr=False)


class PredictResponse(BaseModel):
    results: list[dict[str, Any]]
    model_version: str
    errors: dict[str, str] | None = None


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    action: str = Field(min_length=1)
    project: dict[str, Any] | None = None


class HealthResponse(BaseModel):
    status: str
    model_class: str
    loaded_models: dict[str, str]
    model_errors: dict[str, str]
