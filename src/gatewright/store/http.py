"""Download one file over HTTP(S) with httpx: redirects followed, a size limit, a clear error otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx

from gatewright.errors import StoreError
from gatewright.store.base import redact, write_atomic

MAX_BYTES = 512 << 20
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def fetch(url: str, dest: Path, max_bytes: int = MAX_BYTES) -> Path:
    """GET ``url`` into ``dest`` atomically; a StoreError for anything but a 200 or beyond ``max_bytes``."""
    shown = redact(url)
    limit = f"{max_bytes / (1 << 20):g} MiB"
    try:
        with httpx.Client(follow_redirects=True, timeout=TIMEOUT) as client, client.stream("GET", url) as answer:
            if answer.status_code != 200:
                raise StoreError(
                    f"{shown}: the server answered {answer.status_code} {answer.reason_phrase}, not 200; "
                    "check the URL (and that it needs no login)"
                )
            length = answer.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise StoreError(f"{shown}: {int(length)} bytes, more than the limit of {limit}; fetch a smaller file")

            def chunks() -> Iterator[bytes]:
                size = 0
                for chunk in answer.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise StoreError(f"{shown}: more than the limit of {limit}; fetch a smaller file")
                    yield chunk

            return write_atomic(dest, chunks())
    except httpx.InvalidURL:
        raise StoreError(f"{shown}: not a valid URL") from None
    except httpx.TooManyRedirects:
        raise StoreError(f"{shown}: too many redirects; check the URL") from None
    except httpx.ConnectError:
        raise StoreError(f"{shown}: cannot connect to the server; check the host, the port and the network") from None
    except httpx.TimeoutException:
        raise StoreError(f"{shown}: the server did not answer in time; check the URL and the network") from None
    except httpx.HTTPError as exc:
        raise StoreError(f"{shown}: cannot download it ({type(exc).__name__}); check the URL and the network") from None
