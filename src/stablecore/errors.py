"""Every error stable-core raises on purpose. The API maps them to status codes in one place."""

from __future__ import annotations

MAX_DETAIL = 400  # characters of a message sent to a client; echoed client values are cut
MAX_VALUE = 200  # characters of a string field sent to a client


def clip(text: str, limit: int = MAX_VALUE) -> str:
    """`text`, cut to `limit` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class StableCoreError(Exception):
    """Base of all stable-core errors; `status` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def to_dict(self) -> dict:
        """The one error shape of the API: `error` (this class's name), `detail`, fields."""
        fields = {k: clip(v) if isinstance(v, str) else v for k, v in self.fields.items()}
        return {"error": type(self).__name__, "detail": clip(self.message, MAX_DETAIL), **fields}


class NotFound(StableCoreError):
    """A job, spec, artifact or session with that id does not exist."""

    status = 404


class InvalidParams(StableCoreError):
    """A job's params or inputs do not match its schema; `field` names the culprit."""

    status = 422


class MethodNotAllowed(StableCoreError):
    """The route exists but does not take this HTTP method."""

    status = 405


class PayloadTooLarge(StableCoreError):
    """An upload or a request body exceeds the configured size limit."""

    status = 413


class UnsupportedMedia(StableCoreError):
    """An upload is not a media type stable-core knows."""

    status = 415


class Conflict(StableCoreError):
    """The request is valid but illegal in the current state (e.g. cancel a finished job)."""

    status = 409


class NotReady(StableCoreError):
    """No worker has reported the catalog yet (the server is still starting)."""

    status = 503


class Forbidden(StableCoreError):
    """The caller may not do this (plugin installs and model downloads are for admins)."""

    status = 403


class Unauthorized(StableCoreError):
    """The request carries no valid access token."""

    status = 401


class TooManyRequests(StableCoreError):
    """Too many failed sign-ins for a user name or from an address; `retry_after` seconds."""

    status = 429


class PluginError(StableCoreError):
    """A plugin's job declaration is invalid; raised when the plugin loads, not at its first job."""


class ConfigError(StableCoreError):
    """A setting has a bad value, or a combination of settings is unsafe."""


class StoreError(StableCoreError):
    """The data folder cannot be used as it is (e.g. written by a newer schema)."""


class ProtocolError(StableCoreError):
    """A worker speaks another protocol version, or sent a message that does not parse."""


class NodeError(StableCoreError):
    """A remote node cannot be used: unreachable, an unverified host key, a refused login, or
    a machine that lacks what workers need; the message says which and what to do."""

    status = 422


class JobCancelled(Exception):
    """Raised inside a running job by `Context.progress` once the job has been cancelled."""
