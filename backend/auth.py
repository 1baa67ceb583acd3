"""Who is calling: the single local user, or (``SYNGEO_AUTH``) the owner of an API token.

A token arrives as ``Authorization: Bearer TOKEN`` (CLI, scripts) or as the HttpOnly
cookie the login page sets (browser). Only its SHA-256 is stored. Records of other users
answer 404, as if they did not exist, so ids cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from syngeo.backend import deps
from syngeo.backend.errors import ApiError
from syngeo.settings import Settings
from syngeo.store.accounts import hash_token
from syngeo.store.models import LOCAL_USER, ApiToken, User

SESSION_COOKIE = "syngeo_token"
SESSION_MAX_AGE_S = 30 * 24 * 3600


@dataclass(frozen=True)
class Caller:
    id: str
    name: str


def _presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(SESSION_COOKIE) or None


def user_for_token(session: Session | Connection, token: str) -> Caller | None:
    row = session.execute(select(User.id, User.name).join(ApiToken, ApiToken.user_id == User.id)
                          .where(ApiToken.token_sha256 == hash_token(token))).first()
    return Caller(row.id, row.name) if row else None


def _unauthenticated(problem: str) -> ApiError:
    return ApiError(401, problem, "Log in at /login with your API token, or send it as "
                    "'Authorization: Bearer TOKEN'. An administrator creates tokens with "
                    "'syngeo users add NAME'.")


def current_user(request: Request, session: Session | Connection = Depends(deps.session),
                 settings: Settings = Depends(deps.settings)) -> Caller:
    if not settings.auth:
        return Caller(LOCAL_USER, LOCAL_USER)
    token = _presented_token(request)
    if token is None:
        raise _unauthenticated("This server needs an API token.")
    caller = user_for_token(session, token)
    if caller is None:
        raise _unauthenticated("The API token is not valid (it may have been revoked).")
    return caller


router = APIRouter(prefix="/api", tags=["account"])


class MeOut(BaseModel):
    user: str = Field(description="The caller's user name ('local' without SYNGEO_AUTH).")
    auth: bool = Field(description="Whether this server runs in multi-user mode.")


class LoginIn(BaseModel):
    token: str = Field(min_length=1, max_length=256, description="Your API token.")


@router.get("/me", response_model=MeOut, summary="Who the caller is, and whether login is on")
def me(caller: Caller = Depends(current_user),
       settings: Settings = Depends(deps.settings)) -> MeOut:
    return MeOut(user=caller.name, auth=settings.auth)


@router.post("/session", response_model=MeOut,
             summary="Log in: check an API token and keep it in an HttpOnly cookie")
def login(body: LoginIn, request: Request, response: Response,
          session: Session = Depends(deps.session),
          settings: Settings = Depends(deps.settings)) -> MeOut:
    caller = user_for_token(session, body.token) if settings.auth else \
        Caller(LOCAL_USER, LOCAL_USER)
    if caller is None:
        raise _unauthenticated("The API token is not valid (it may have been revoked).")
    if settings.auth:
        response.set_cookie(SESSION_COOKIE, body.token, max_age=SESSION_MAX_AGE_S,
                            httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
    return MeOut(user=caller.name, auth=settings.auth)


@router.delete("/session", status_code=204, summary="Log out (forget the cookie)")
def logout(response: Response) -> Response:
    response.delete_cookie(SESSION_COOKIE)
    response.status_code = 204
    return response
