"""Every 4xx names the problem and the fix: {"detail": "...", "problem": "...", "fix": "..."}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from syngeo.io.weights import WeightDataError


class ApiError(Exception):
    def __init__(self, status: int, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.status, self.problem, self.fix = status, problem, fix


def error_body(problem: str, fix: str) -> dict[str, str]:
    return {"detail": f"{problem.rstrip('.')}. {fix}", "problem": problem, "fix": fix}


def describe_validation(errors: list[dict], prefix: str = "") -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.problem, exc.fix), status_code=exc.status)

    @app.exception_handler(WeightDataError)
    async def _weight_error(_: Request, exc: WeightDataError) -> JSONResponse:
        return JSONResponse(error_body(exc.problem, exc.fix), status_code=422)

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
