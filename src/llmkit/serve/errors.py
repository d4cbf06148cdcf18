"""API errors: an HTTP status plus OpenAI's error object (message, type, param, code).

Every error a client can cause leaves the server as one of these, with a message that names the
field and what to do, never as a 500.
"""

from __future__ import annotations

from llmkit.serve.protocol import ErrorInfo, ErrorResponse

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_unavailable",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict:
        info = ErrorInfo(message=self.message, type=_TYPES.get(self.status, "invalid_request_error"), param=self.param)
        info.code = self.code
        return ErrorResponse(error=info).model_dump()


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(name: str, known: list[str]) -> APIError:
    return APIError(
        404,
        f"model {name!r} is not served here; served models: {', '.join(known)} (GET /v1/models)",
        param="model",
        code="model_not_found",
    )


def queue_full(waiting: int) -> APIError:
    return APIError(
        429,
        f"the server is busy ({waiting} requests are waiting); retry in a moment",
        code="queue_full",
        headers={"Retry-After": "1"},
    )


def unavailable(why: str) -> APIError:
    return APIError(503, why, code="unavailable", headers={"Retry-After": "5"})
