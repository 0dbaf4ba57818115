"""Request and response bodies of the ML backend protocol, as Label Studio 1.23 sends and reads them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    project: str | int | None = None
    schema_: str = Field(default="", alias="schema", description="The project's labeling config.")
    hostname: str | None = None
    access_token: str | None = Field(default=None, repr=False)
    extra_params: Any = None


class SetupResponse(BaseModel):
    model_version: str


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    tasks: list[dict[str, Any]] = Field(min_length=1)
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
