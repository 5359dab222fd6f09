"""A client of the control API, for the CLI (``gatewright apply / get / delete / logs``) and scripts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from gatewright.errors import GatewrightError

URL_ENV = "GATEWRIGHT_CONTROL_URL"
TOKEN_ENV = "GATEWRIGHT_CONTROL_TOKEN"
DEFAULT_URL = "http://127.0.0.1:7070"
DEFAULT_DATA = Path("gatewright-data")


class ControlError(GatewrightError):
    """The control plane refused a request or cannot be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ControlClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.token = token or os.environ.get(TOKEN_ENV) or _token_file()
        if not self.token:
            raise ControlError(
                f"no token for the control plane at {self.url}: set {TOKEN_ENV} (or pass --token); "
                f"a local control plane keeps its token in {DEFAULT_DATA / 'token'}"
            )
        self.http = httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {self.token}"}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise ControlError(
                f"cannot reach the control plane at {self.url} ({exc}); start it with `gatewright control` "
                f"or point {URL_ENV} at it"
            ) from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise ControlError(f"{message} ({response.status_code})", response.status_code)
        return response

    def apply(self, text: str | bytes) -> tuple[dict[str, Any], bool]:
        """Apply a spec (YAML or JSON text); returns the status and whether it was created."""
        response = self.request("POST", "/deployments", content=text, headers={"content-type": "application/yaml"})
        return response.json(), response.status_code == 201

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/deployments/{name}").json()
        return result

    def list(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/deployments").json()["deployments"]
        return result

    def delete(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/deployments/{name}").json()
        return result

    def logs(self, name: str) -> str:
        return self.request("GET", f"/deployments/{name}/logs").text

    def follow(self, name: str) -> Iterator[tuple[str, str]]:
        """("line", text) for each log line, live, then ("end", phase)."""
        try:
            with self.http.stream(
                "GET", f"/api/v1/deployments/{name}/logs", params={"follow": "true"}, timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ControlError(f"{response.json().get('error', response.text)} ({response.status_code})")
                event, data = "message", []
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:
                        yield ("end" if event == "end" else "line"), "\n".join(data)
                        if event == "end":
                            return
                        event, data = "message", []
        except httpx.HTTPError as exc:
            raise ControlError(f"the log stream from {self.url} broke off: {exc}") from None

    def wait(self, name: str) -> dict[str, Any]:
        """Wait until the deployment is Ready or Failed (following its log), then its status."""
        for kind, _text in self.follow(name):
            if kind == "end":
                break
        return self.get(name)


def _token_file() -> str | None:
    path = DEFAULT_DATA / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
