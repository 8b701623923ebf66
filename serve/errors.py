"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

Every rejection the server makes goes through ``APIError`` (or is converted to one), so a client
library that understands OpenAI's errors understands ours, and nothing reaches the client as a
stack trace.  Runtime input errors (a bad image, a too-long prompt, a bad alpha, logits that came
out NaN) become 400s.
"""
from __future__ import annotations

from starlette.responses import JSONResponse

from runtime.errors import ImageError, NumericalError, PromptError, RuntimeInputError, SteeringError


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_runtime(e: RuntimeInputError) -> APIError:
    """The runtime said no: the request was wrong (400), and the model is unchanged."""
    message = f"{type(e).__name__}: {e}"
    if isinstance(e, ImageError):
        return APIError(400, message, param="messages", code="invalid_image")
    if isinstance(e, PromptError):
        code = "context_length_exceeded" if "exceeds the context" in str(e) or "TensorRT engines" in str(e) \
            else "invalid_prompt"
        return APIError(400, message, param="messages", code=code)
    if isinstance(e, SteeringError):
        return APIError(400, message, param="steering", code="invalid_steering")
    if isinstance(e, NumericalError):
        return APIError(400, message, param="steering" if e.steered else None, code="non_finite_logits")
    return APIError(400, message, code="invalid_request")


def unauthorized() -> APIError:
    return APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    type="authentication_error", code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


def overloaded(retry_after_s: int, held: int) -> APIError:
    return APIError(503, f"the server is at capacity ({held} requests running or queued); retry after "
                         f"{retry_after_s} s", type="server_overloaded", code="queue_full",
                    headers={"Retry-After": str(retry_after_s)})
