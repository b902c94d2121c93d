"""A small client for the MONAI Label server of apps/scoliosis, on urllib alone.

Slicer does not guarantee `requests`, so this uses the standard library. Every call has a timeout, and every
failure (no server, no answer in time, an HTTP error, an answer that is not what was asked for) becomes one
ServerError whose message says what happened in words a clinician at the viewer can pass on.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
# Inference and uploads move a whole radiograph and run the model; they get longer than a status call.
DEFAULT_LONG_TIMEOUT_S = 300.0
_DETAIL_CHARS = 300


class ServerError(Exception):
    """The server could not be reached or did not answer as expected; `status` is the HTTP code, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServerInfo:
    """What GET /info/ says the server offers."""

    name: str
    version: str
    models: dict[str, dict] = field(default_factory=dict)
    strategies: tuple[str, ...] = ()
    trainers: tuple[str, ...] = ()
    train_stats: dict[str, dict] = field(default_factory=dict)  # trainer -> its latest run's status

    @classmethod
    def from_json(cls, info: Any) -> ServerInfo:
        if not isinstance(info, dict):
            raise ServerError(f"GET /info/ answered {type(info).__name__}, expected a JSON object")
        models = info.get("models") or {}
        if not isinstance(models, dict):
            raise ServerError("GET /info/ answered 'models' that is not an object")
        stats = info.get("train_stats") or {}
        if not isinstance(stats, dict):
            raise ServerError("GET /info/ answered 'train_stats' that is not an object")
        return cls(
            name=str(info.get("name", "")),
            version=str(info.get("version", "")),
            models={str(k): v if isinstance(v, dict) else {} for k, v in models.items()},
            strategies=tuple(str(k) for k in (info.get("strategies") or {})),
            trainers=tuple(str(k) for k in (info.get("trainers") or {})),
            train_stats={str(k): v for k, v in stats.items() if isinstance(v, dict)},
        )


def normalise_url(address: str) -> str:
    """'host:8000' or 'http://host:8000/' -> 'http://host:8000'; ServerError for what is not an HTTP URL."""
    text = address.strip()
    if not text:
        raise ServerError("no server address given (e.g. http://127.0.0.1:8000)")
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(f"{address!r} is not a server address like http://127.0.0.1:8000")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _multipart(fields: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """Body and content type of a multipart/form-data request; fields map a name to (filename, data, type)."""
    boundary = f"spinecascade-{uuid.uuid4().hex}"
    chunks = []
    for name, (filename, data, content_type) in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
        )
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _filename_from(disposition: str | None, fallback: str) -> str:
    match = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)\"?", disposition or "")
    name = urllib.parse.unquote(match.group(1)) if match else fallback
    return name.replace("/", "_").replace("\\", "_") or fallback


def _detail(body: bytes) -> str:
    """The server's own explanation of an error: FastAPI's {"detail": ...}, else the start of the body."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "detail" in doc:
        text = doc["detail"] if isinstance(doc["detail"], str) else json.dumps(doc["detail"])
    return text[:_DETAIL_CHARS] or "no details"


class MonaiLabelClient:
    """The calls the Slicer module makes; each returns parsed JSON (or bytes) or raises ServerError."""

    def __init__(
        self, url: str, timeout: float = DEFAULT_TIMEOUT_S, long_timeout: float = DEFAULT_LONG_TIMEOUT_S
    ) -> None:
        self.url = normalise_url(url)
        self.timeout = timeout
        self.long_timeout = long_timeout

    # ------------------------------------------------------------------ the server's API

    def info(self) -> ServerInfo:
        return ServerInfo.from_json(self._json("GET", "/info/"))

    def infer(
        self, model: str, *, image_id: str | None = None, image: bytes | None = None, filename: str = "image.png"
    ) -> dict:
        """Landmarks for a datastore image (image_id) or for uploaded image file bytes."""
        if (image_id is None) == (image is None):
            raise ValueError("infer needs exactly one of image_id and image")
        query = {"output": "json", **({"image": image_id} if image_id is not None else {})}
        files = {} if image is None else {"file": (filename, image, "application/octet-stream")}
        answer = self._json("POST", f"/infer/{_quote(model)}", query, files=files, timeout=self.long_timeout)
        return _object(answer, f"inference with model {model!r}")

    def upload_image(self, image_id: str, data: bytes, filename: str) -> str:
        """Add an image to the datastore; the id the server stored it under."""
        answer = self._json(
            "PUT",
            "/datastore/image",
            {"image": image_id},
            files={"file": (filename, data, "application/octet-stream")},
            timeout=self.long_timeout,
        )
        return str(_object(answer, "the image upload").get("image") or image_id)

    def save_label(self, image_id: str, label: dict, tag: str = "final") -> dict:
        """Store a label (our JSON format) for a datastore image."""
        data = json.dumps(label).encode("utf-8")
        answer = self._json(
            "PUT",
            "/datastore/label",
            {"image": image_id, "tag": tag},
            files={"label": (f"{image_id}.json", data, "application/json")},
        )
        return _object(answer, "the label upload")

    def get_label(self, label_id: str, tag: str = "final") -> dict:
        return _object(self._json("GET", "/datastore/label", {"label": label_id, "tag": tag}), "the label")

    def next_sample(self, strategy: str) -> str | None:
        """The image the active-learning strategy wants labelled next; None when it has none left."""
        answer = _object(self._json("POST", f"/activelearning/{_quote(strategy)}", body={}), "active learning")
        image_id = answer.get("id")
        if image_id is not None and not isinstance(image_id, str):
            raise ServerError(f"active learning answered an image id that is not a string: {image_id!r}")
        return image_id or None

    def download_image(self, image_id: str) -> tuple[bytes, str]:
        """Image file bytes and the file name the server gives them."""
        body, headers = self._request("GET", "/datastore/image", {"image": image_id}, timeout=self.long_timeout)
        return body, _filename_from(headers.get("Content-Disposition"), image_id)

    def start_training(self, model: str, params: dict | None = None) -> dict:
        answer = self._json("POST", f"/train/{_quote(model)}", body=params or {})
        return _object(answer, f"training of model {model!r}")

    def training_status(self) -> dict | None:
        """MONAI Label's record of the latest training task (its state), or None if it has run none."""
        try:
            answer = self._json("GET", "/train/")
        except ServerError as exc:
            if exc.status == 404:
                return None
            raise
        return _object(answer, "the training status")

    # ------------------------------------------------------------------ transport

    def _json(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        *,
        body: Any = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        timeout: float | None = None,
    ) -> Any:
        raw, _ = self._request(method, path, query, body=body, files=files, timeout=timeout)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            snippet = raw[:80].decode("utf-8", errors="replace")
            raise ServerError(f"{method} {path} answered something that is not JSON: {snippet!r}") from None

    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        *,
        body: Any = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        timeout: float | None = None,
    ) -> tuple[bytes, Any]:
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        data = None
        if files:
            data, headers["Content-Type"] = _multipart(files)
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode("utf-8"), "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        limit = self.timeout if timeout is None else timeout
        logger.debug("%s %s", method, url)
        try:
            with urllib.request.urlopen(request, timeout=limit) as response:
                return response.read(), response.headers
        except urllib.error.HTTPError as exc:
            detail = _detail(exc.read())
            raise ServerError(
                f"the server answered {method} {path} with HTTP {exc.code}: {detail}", status=exc.code
            ) from None
        except TimeoutError:
            raise ServerError(f"the server at {self.url} did not answer {method} {path} within {limit:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise ServerError(f"the server at {self.url} did not answer within {limit:g} s") from None
            raise ServerError(f"cannot reach the server at {self.url}: {_reason(exc.reason)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ServerError(f"the connection to {self.url} failed during {method} {path}: {_reason(exc)}") from None


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _reason(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is the MONAI Label server running, and on this port?)"
    if isinstance(reason, socket.gaierror):
        return "unknown host name"
    return getattr(reason, "strerror", None) or str(reason)


def _object(answer: Any, what: str) -> dict:
    if not isinstance(answer, dict):
        raise ServerError(f"the server's answer to {what} is {type(answer).__name__}, expected a JSON object")
    return answer
