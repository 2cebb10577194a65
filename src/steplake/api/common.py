"""Helpers shared by the route modules: app state access, ids, list answers, OpenAPI request bodies.

Routes read JSON bodies themselves (``read_model``: orjson + pydantic, no FastAPI body parsing); the
OpenAPI document still describes each body through ``documented_body(Model)``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.requests import Request

from ..config import Settings
from ..store.base import Page
from .responses import JSONResponse, ok

if TYPE_CHECKING:
    from ..pool.pool import Pool

_BODY_MODELS: dict[str, type[BaseModel]] = {}
REF = "#/components/schemas/{model}"


def pool_of(request: Request) -> Pool:
    pool: Pool = request.app.state.pool
    return pool


def gateway_of(request: Request) -> Any:
    return getattr(request.app.state, "gateway", None)


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def new_id() -> str:
    return uuid.uuid4().hex


def page_answer(page: Page) -> JSONResponse:
    return ok({"items": page.items, "next_cursor": page.next_cursor})


def trajectory_urls(settings: Settings, trajectory_id: str) -> dict[str, str]:
    server = settings.server_url
    return {"base_url": f"{server}/t/{trajectory_id}/v1", "anthropic_base_url": f"{server}/t/{trajectory_id}"}


def documented_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` describing a JSON body that the route reads itself with ``read_model``."""
    _BODY_MODELS[model.__name__] = model
    schema = {"$ref": REF.format(model=model.__name__)}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def install_openapi(app: FastAPI) -> None:
    """Generate FastAPI's document once, then add the schemas of the bodies routes read themselves."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _BODY_MODELS.items():
            js = model.model_json_schema(ref_template=REF, mode="validation")
            for def_name, d in js.pop("$defs", {}).items():
                schemas.setdefault(def_name, d)
            schemas[name] = js
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["pool_of", "gateway_of", "settings_of", "new_id", "page_answer", "trajectory_urls",
           "documented_body", "install_openapi"]
