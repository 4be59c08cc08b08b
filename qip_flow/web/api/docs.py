"""The API's docs page: its OpenAPI document rendered on the server as plain HTML (operations,
parameters, bodies, answers, the kinds of problem), in the NHS.UK styles the pages use. No
script: Swagger UI and ReDoc would load theirs from a CDN, which the Content-Security-Policy
forbids (and they are not shipped with the package)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from qip_flow.web.api.problems import KINDS

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _type(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    return str(schema.get("type", "any")) + (f" ({schema['format']})" if "format" in schema else "")


def _resolve(doc: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A schema with its references written out (a few levels deep), to show a body's shape."""
    if depth > 4:
        return "…"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _resolve(doc, doc["components"]["schemas"].get(name, {}), depth + 1)
    if "oneOf" in schema:
        return {"one of": [_resolve(doc, s, depth + 1) for s in schema["oneOf"]]}
    if schema.get("type") == "object" and "properties" in schema:
        required = set(schema.get("required", []))
        return {f"{k}{'' if k in required else '?'}": _resolve(doc, v, depth + 1)
                for k, v in schema["properties"].items()}
    if schema.get("type") == "array":
        return [_resolve(doc, schema.get("items", {}), depth + 1)]
    if "anyOf" in schema:
        return " or ".join(str(_resolve(doc, s, depth + 1)) for s in schema["anyOf"])
    return _type(schema)


def page(doc: dict[str, Any]) -> str:
    operations = []
    for path, methods in doc.get("paths", {}).items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {})
            operations.append({
                "method": method.upper(), "path": path, "summary": op.get("summary", ""),
                "description": op.get("description", ""),
                "anchor": f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
                "parameters": [{"name": p["name"], "in": p["in"], "required": p.get("required"),
                                "type": _type(p.get("schema", {})),
                                "description": p.get("description", "")}
                               for p in op.get("parameters", [])],
                "bodies": [(media, json.dumps(_resolve(doc, spec.get("schema", {})), indent=2))
                           for media, spec in body.items()],
                "responses": [(code, r.get("description", "")) for code, r in
                              op.get("responses", {}).items()]})
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("api_docs.html.j2").render(doc=doc, operations=operations,
                                             kinds=list(KINDS.items()))
