"""Settings of the DICOMweb (PACS) mode, from environment variables: the credentials never go on a command line.

| variable | meaning |
|---|---|
| MONAI_LABEL_DATASTORE_USERNAME, MONAI_LABEL_DATASTORE_PASSWORD | HTTP basic authentication (MONAI Label's |
|   | names: its log masks them) |
| SPINECASCADE_DICOMWEB_TOKEN | a bearer token instead (Authorization: Bearer ...) |
| SPINECASCADE_DICOMWEB_MODALITIES | the modalities listed as films (default DX,CR) |
| MONAI_LABEL_DATASTORE_CACHE_PATH | the cache of films and reports (default ~/.cache/spinecascade/dicomweb) |
| SPINECASCADE_DICOMWEB_TIMEOUT | seconds to wait for the PACS per request (default 30) |
| SPINECASCADE_DICOMWEB_RETRY | seconds between tries to send labels the PACS did not take (default 30) |
| SPINECASCADE_DICOMWEB_LIST_SECONDS | how long a listing of the PACS is reused (default 5) |
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from lib.configs.landmarks import ConfigError

DEFAULT_MODALITIES = ("DX", "CR")
_MODALITY = re.compile(r"[A-Z]{2,4}")


@dataclass(frozen=True)
class DicomWebConfig:
    url: str
    modalities: tuple[str, ...]
    cache: Path
    timeout: float
    retry_seconds: float
    list_seconds: float
    basic: tuple[str, str] | None = None
    token: str | None = None

    def __repr__(self) -> str:  # the credentials stay out of logs and tracebacks
        return f"DicomWebConfig(url={self.url!r}, modalities={self.modalities}, cache={str(self.cache)!r})"

    @classmethod
    def from_env(cls, url: str, env: Mapping[str, str] = os.environ) -> DicomWebConfig:
        url = url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.username or parts.password:
            raise ConfigError("put the DICOMweb credentials in MONAI_LABEL_DATASTORE_USERNAME and "
                              "MONAI_LABEL_DATASTORE_PASSWORD (or SPINECASCADE_DICOMWEB_TOKEN), not in the URL")
        user = env.get("MONAI_LABEL_DATASTORE_USERNAME") or env.get("MONAI_LABEL_DICOMWEB_USERNAME") or ""
        password = env.get("MONAI_LABEL_DATASTORE_PASSWORD") or env.get("MONAI_LABEL_DICOMWEB_PASSWORD") or ""
        token = env.get("SPINECASCADE_DICOMWEB_TOKEN") or None
        if bool(user) != bool(password):
            raise ConfigError("MONAI_LABEL_DATASTORE_USERNAME and MONAI_LABEL_DATASTORE_PASSWORD go together: "
                              "set both or neither")
        if user and token:
            raise ConfigError("set either a user name and password or SPINECASCADE_DICOMWEB_TOKEN, not both")
        modalities = tuple(m.strip().upper() for m in env.get("SPINECASCADE_DICOMWEB_MODALITIES", "").split(",")
                           if m.strip()) or DEFAULT_MODALITIES
        bad = [m for m in modalities if not _MODALITY.fullmatch(m)]
        if bad:
            raise ConfigError(f"SPINECASCADE_DICOMWEB_MODALITIES: {bad} are not DICOM modalities (e.g. DX,CR)")
        cache = env.get("MONAI_LABEL_DATASTORE_CACHE_PATH") or env.get("MONAI_LABEL_DICOMWEB_CACHE_PATH")
        folder = Path(cache).expanduser() if cache else Path.home() / ".cache" / "spinecascade" / "dicomweb"
        return cls(
            url=url,
            modalities=modalities,
            cache=folder / hashlib.sha256(url.encode()).hexdigest()[:16],
            timeout=_seconds(env, "SPINECASCADE_DICOMWEB_TIMEOUT", 30.0),
            retry_seconds=_seconds(env, "SPINECASCADE_DICOMWEB_RETRY", 30.0),
            list_seconds=_seconds(env, "SPINECASCADE_DICOMWEB_LIST_SECONDS", 5.0),
            basic=(user, password) if user else None,
            token=token,
        )

    def session(self) -> requests.Session:
        """An HTTP session with the credentials and a timeout on every request."""
        session = _TimeoutSession(self.timeout)
        if self.basic:
            session.auth = self.basic
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        return session


class _TimeoutSession(requests.Session):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, *args, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


def _seconds(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key} {raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{key} {raw!r}: must be positive")
    return value
