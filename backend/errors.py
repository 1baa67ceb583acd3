"""Every 4xx names the problem and the fix: {"detail": "...", "problem": "...", "fix": "..."}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

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
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Starlette's own errors (no such route, wrong method, unreadable body) in the same
        shape as ours."""
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
