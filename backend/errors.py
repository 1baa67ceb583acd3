"""Every 4xx names the problem and the fix: {"detail": "...", "problem": "...", "fix": "..."}.

A browser that asks for a page (not /api/) and takes HTML gets the same in a page instead.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from syngeo.backend.html import render_page
from syngeo.io.weights import WeightDataError


class ApiError(Exception):
    def __init__(self, status: int, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.status, self.problem, self.fix = status, problem, fix


class ErrorOut(BaseModel):
    """The body of every 4xx answer."""

    detail: str = Field(description="The problem and the fix in one sentence.")
    problem: str = Field(description="What is wrong, naming the field or parameter.")
    fix: str = Field(description="What to do about it.")


def error_body(problem: str, fix: str) -> dict[str, str]:
    return {"detail": f"{problem.rstrip('.')}. {fix}", "problem": problem, "fix": fix}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.problem, exc.fix), status_code=exc.status)


def describe_validation(errors: list[dict], prefix: str = "") -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts)


def wants_html(request: Request) -> bool:
    """A browser asking for a page: the API (/api/) answers JSON whatever the client takes."""
    return (not request.url.path.startswith("/api/")
            and "text/html" in request.headers.get("accept", ""))


def _html_error(request: Request, exc: HTTPException) -> HTMLResponse:
    """Starlette's own errors for a browser, in the user's words, with a link home."""
    path = request.url.path[:200]
    if exc.status_code == 404:
        title, problem, fix = ("Page not found", f"There is no page at {path}.",
                               "Check the address, or start from the home page: it lists your "
                               "runs and datasets.")
    elif exc.status_code == 405:
        title, problem, fix = ("Not allowed", f"{path} cannot be opened this way "
                               f"({request.method}).", "Open it from a link on the home page.")
    else:
        title, problem, fix = (f"Error {exc.status_code}", str(exc.detail),
                               "Go back and try again, or start from the home page.")
    return render_page(request, "error.html", exc.status_code, title=title, problem=problem,
                       fix=fix)


def _document_errors(app: FastAPI) -> None:
    """FastAPI documents its own 422 body (a list of pydantic errors); ours is ErrorOut."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:  # generate() fills it in; patch it once
            schemas = generate().get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = ErrorOut.model_json_schema()
                schemas.pop("ValidationError", None)
        return app.openapi_schema

    app.openapi = openapi


def install_error_handlers(app: FastAPI) -> None:
    _document_errors(app)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse | HTMLResponse:
        """Starlette's own errors (no such route, wrong method, unreadable body) in the same
        shape as ours."""
        if wants_html(request):
            return _html_error(request, exc)
        path = request.url.path[:200]
        if exc.status_code == 404:
            problem, fix = (f"There is no page or API endpoint at {path!r}.",
                            "Check the address; /docs lists the API's endpoints.")
        elif exc.status_code == 405:
            problem, fix = (f"{request.method} is not allowed on {path!r}.",
                            "Use a method /docs lists for this endpoint.")
        elif exc.detail == "There was an error parsing the body":  # FastAPI's words
            problem, fix = ("There was an error parsing the body: it ended early, or it is "
                            "larger or of another type than this endpoint reads.",
                            "Send the JSON body /docs describes, with Content-Type: "
                            "application/json; files go to POST /api/datasets.")
        else:
            problem, fix = str(exc.detail), "See /docs for what this endpoint accepts."
        return JSONResponse(error_body(problem, fix), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(WeightDataError)
    async def _weight_error(_: Request, exc: WeightDataError) -> JSONResponse:
        # 422, or 413 for an archive that inflates beyond the limit
        return JSONResponse(error_body(exc.problem, exc.fix), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(f"Invalid request: {describe_validation(exc.errors())}",
                                       "Correct the named fields and send the request again "
                                       "(see /docs for the schema)."), status_code=422)

    @app.exception_handler(ValidationError)
    async def _spec_invalid(_: Request, exc: ValidationError) -> JSONResponse:
        problem = f"Invalid spec: {describe_validation(exc.errors(), 'spec.')}"
        return JSONResponse(error_body(problem,
                                       "Correct the named fields; GET /api/kinds lists each "
                                       "kind's fields, bounds and defaults."), status_code=422)
