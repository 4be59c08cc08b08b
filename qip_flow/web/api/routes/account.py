"""Who the API takes you for, and the webhook subscribers (registered by an administrator,
or a token with ``webhooks:write``; those in the channels file are listed too)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from qip_flow.runtime import Runtime
from qip_flow.services import webhooks
from qip_flow.services.policy import Act, Actor
from qip_flow.web.api import models
from qip_flow.web.api.deps import caller, runtime
from qip_flow.web.api.problems import documented

router = APIRouter()

ROUTE_POLICY: dict[tuple[str, str], str] = {
    ("GET", "/me"): "signed-in",
    ("GET", "/webhooks"): Act.MANAGE_WEBHOOKS.value,
    ("POST", "/webhooks"): Act.MANAGE_WEBHOOKS.value,
    ("DELETE", "/webhooks/{name}"): Act.MANAGE_WEBHOOKS.value,
}


@router.get("/me", response_model=models.Me, responses=documented(), tags=["account"],
            summary="Who the API takes you for")
def me(actor: Actor = Depends(caller)) -> JSONResponse:
    """A token's service account (its name, scopes and plans) or a signed-in person."""
    account = actor.account
    if account is not None:
        return JSONResponse({"kind": "service account", "name": account.name,
                             "scopes": sorted(account.scopes),
                             "plans": account.label.partition(", for ")[2]})
    return JSONResponse({"kind": "person", "name": actor.person.name, "id": actor.person.id,
                         "scopes": [], "plans": "as the policy allows"})


@router.get("/webhooks", response_model=models.WebhookList, responses=documented(),
            tags=["webhooks"], summary="List webhook subscribers")
def list_webhooks(rt: Runtime = Depends(runtime), actor: Actor = Depends(caller)) -> JSONResponse:
    return JSONResponse({"items": webhooks.listing(rt, actor)})


@router.post("/webhooks", status_code=201, response_model=models.WebhookCreated,
             responses=documented(), tags=["webhooks"], summary="Register a webhook subscriber")
def register(body: models.WebhookIn, rt: Runtime = Depends(runtime),
             actor: Actor = Depends(caller)) -> JSONResponse:
    """The subscriber gets signed events (Standard Webhooks) through the outbox; its secret is
    in this answer only."""
    row, secret = webhooks.register(rt, actor, name=body.name, url=body.url,
                                    events=body.events, plans=body.plans)
    return JSONResponse({**row, "secret": secret}, status_code=201)


@router.delete("/webhooks/{name}", status_code=204, responses=documented(), tags=["webhooks"],
               summary="Remove a webhook subscriber")
def remove(name: str, rt: Runtime = Depends(runtime), actor: Actor = Depends(caller)) -> Response:
    webhooks.remove(rt, actor, name)
    return Response(status_code=204)
