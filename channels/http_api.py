"""Requests to a provider's REST API, with its failures turned into ProviderError."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from channels.base import ProviderError

# The part of a provider's error body worth showing a user; the rest stays out.
_ERROR_BODY_CHARS = 300


async def request_json(
    http: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    form: list[tuple[str, str]] | dict[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """Send one request; return its decoded JSON (None for an empty body). `form` is
    sent url-encoded, repeated keys kept (httpx's `data` takes only a dict)."""
    if form is not None:
        pairs = list(form.items()) if isinstance(form, dict) else form
        kwargs["content"] = urlencode(pairs).encode()
        kwargs["headers"] = {
            **kwargs.get("headers", {}),
            "Content-Type": "application/x-www-form-urlencoded",
        }
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.ConnectError as exc:
        # The request never left: retrying cannot place a second call or message.
        raise ProviderError(
            f"{provider} is unreachable: {type(exc).__name__}", safe_to_retry=True
        ) from None
    except httpx.TimeoutException as exc:
        raise ProviderError(f"{provider} did not answer in time: {type(exc).__name__}") from None
    except httpx.HTTPError as exc:
        raise ProviderError(f"{provider} request failed: {type(exc).__name__}") from None
    if response.status_code >= 400:
        raise ProviderError(
            f"{provider} answered {response.status_code}: {response.text[:_ERROR_BODY_CHARS]}",
            status=response.status_code,
        )
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise ProviderError(
            f"{provider} answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
        ) from None


async def download(
    http: httpx.AsyncClient, provider: str, url: str, destination: Path, **kwargs: Any
) -> None:
    """Stream a file (a recording) to destination, written whole or not at all."""
    partial = destination.with_name(destination.name + ".part")
    try:
        async with http.stream("GET", url, **kwargs) as response:
            if response.status_code >= 400:
                raise ProviderError(
                    f"{provider} answered {response.status_code} for the recording",
                    status=response.status_code,
                )
            with partial.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise ProviderError(f"{provider} recording download failed: {type(exc).__name__}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(destination)
