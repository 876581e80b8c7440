"""OpenAPI 3.1 document built from the pydantic schemas (one source of truth for validation and docs)."""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from server import schemas

REF = "#/components/schemas/{model}"


def _json(ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": REF.format(model=ref)}}}


def _errors(*codes: int) -> dict:
    text = {
        400: "Invalid request (schema, cap, context length)",
        401: "Missing or wrong API key",
        404: "Unknown model",
        413: "Request body too large",
        415: "Content-Type is not application/json",
        429: "Queue full (see Retry-After)",
        503: "Model not loaded yet",
        504: "Generation timed out",
    }
    return {str(c): {"description": text[c], "content": _json("ErrorResponse")} for c in codes}


def _set_limits(defs: dict, settings, model_id: str | None) -> None:
    """This server's own limits in the document: the token cap and the one model it serves."""

    def limit(prop: dict) -> None:
        for option in prop.get("anyOf", [prop]):
            if option.get("type") == "integer":
                option["maximum"] = settings.max_new_tokens_cap
                option["minimum"] = 1

    gen = defs["GenerateRequest"]["properties"]
    limit(gen["max_new_tokens"])
    gen["max_new_tokens"]["default"] = settings.default_max_new_tokens
    for key in ("prompt", "messages"):  # give one of them, not null (oneOf on the object says which)
        gen[key].pop("default", None)
        gen[key]["anyOf"] = [o for o in gen[key]["anyOf"] if o.get("type") != "null"]
    chat = defs["ChatCompletionRequest"]["properties"]
    limit(chat["max_tokens"])
    limit(chat["max_completion_tokens"])
    if model_id:
        chat["model"]["enum"] = [model_id]


def build_spec(settings, model_id: str | None = None) -> dict:
    models = [
        (schemas.GenerateRequest, "validation"),
        (schemas.GenerateResponse, "serialization"),
        (schemas.ChatCompletionRequest, "validation"),
        (schemas.ChatCompletion, "serialization"),
        (schemas.ModelList, "serialization"),
        (schemas.ErrorResponse, "serialization"),
        (schemas.Health, "serialization"),
        (schemas.Ready, "serialization"),
        (schemas.Info, "serialization"),
    ]
    _, top = models_json_schema(models, ref_template=REF)
    components = {"schemas": top["$defs"]}
    _set_limits(components["schemas"], settings, model_id)
    security = []
    if settings.api_key:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        security = [{"bearer": []}]
    auth = _errors(401) if settings.api_key else {}
    gen_errors = {**_errors(400, 413, 415, 429, 503, 504), **auth}
    paths = {
        "/generate": {
            "post": {
                "summary": "Generate text from a prompt or chat messages",
                "operationId": "generate",
                "security": security,
                "requestBody": {"required": True, "content": _json("GenerateRequest")},
                "responses": {"200": {"description": "Completion", "content": _json("GenerateResponse")}, **gen_errors},
            }
        },
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI-compatible chat completion (stream: true -> server-sent events ending with [DONE])",
                "operationId": "createChatCompletion",
                "security": security,
                "requestBody": {"required": True, "content": _json("ChatCompletionRequest")},
                "responses": {
                    "200": {
                        "description": "Completion (JSON) or a text/event-stream of chunks",
                        "content": {**_json("ChatCompletion"), "text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **gen_errors,
                    **_errors(404),
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "The served model",
                "operationId": "listModels",
                "security": security,
                "responses": {"200": {"description": "Models", "content": _json("ModelList")}, **_errors(503), **auth},
            }
        },
        "/health": {
            "get": {
                "summary": "Process alive",
                "operationId": "health",
                "responses": {"200": {"description": "Alive", "content": _json("Health")}},
            }
        },
        "/ready": {
            "get": {
                "summary": "Model loaded",
                "operationId": "ready",
                "responses": {
                    "200": {"description": "Ready", "content": _json("Ready")},
                    "503": {"description": "Loading or failed", "content": _json("Ready")},
                },
            }
        },
        "/info": {
            "get": {
                "summary": "Load details: folders, dtype, merge, timings, the load error",
                "operationId": "info",
                "security": security,
                "responses": {"200": {"description": "Details", "content": _json("Info")}, **auth},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "security": security,
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **auth,
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "musicprod server",
            "version": "0.1.0",
            "description": "Serves the champion (base model + LoRA adapter) of a musicprod experiment.",
        },
        "paths": paths,
        "components": components,
    }
