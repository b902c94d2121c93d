"""A local PACS to try the server's DICOMweb mode: Orthanc with its DICOMweb plugin on 127.0.0.1.

    python apps/scoliosis/tools/local_pacs.py [--dir DIR] [--port 8042] [--samples apps/scoliosis/sample_studies]

starts Orthanc (Debian packages `orthanc` and `orthanc-dicomweb`), stores every sample radiograph that is not
there yet as a DICOM DX film with a nominal pixel spacing, and keeps running until Ctrl-C. Then

    make serve STUDIES=http://127.0.0.1:8042/dicom-web

serves the films. The tests start the same Orthanc through `start_orthanc`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

log = logging.getLogger(__name__)

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SAMPLE_SPACING_MM = 0.3  # the AASCE samples carry no spacing; a typical full-spine detector's
DEFAULT_DIR = Path.home() / ".cache" / "spinecascade" / "orthanc"
# Lua, for the tests: refuse STOW-RS stores while the file REFUSE_FILE exists in Orthanc's folder, and with a
# token, answer DICOMweb requests only when they carry it as a bearer token (as a PACS behind a token gateway).
_FILTER_LUA = """function IncomingHttpRequestFilter(method, uri, ip, username, headers)
  if {token} ~= nil and uri:find('/dicom%-web/') == 1 and headers['authorization'] ~= 'Bearer ' .. {token} then
    return false
  end
  if method == 'POST' and uri:find('/dicom%-web/studies') == 1 then
    local f = io.open({flag}, 'r')
    if f ~= nil then io.close(f) return false end
  end
  return true
end
"""
REFUSE_FILE = "refuse-stores"


class PacsError(RuntimeError):
    """Orthanc is missing or does not start."""


def orthanc_binary() -> str | None:
    """The Orthanc program, or None when the Debian packages are not installed."""
    binary = shutil.which("Orthanc")
    return binary if binary and PLUGIN.is_file() else None


def write_config(folder: Path, http_port: int, dicom_port: int, users: dict[str, str] | None = None,
                 token: str | None = None) -> Path:
    """Orthanc's configuration: storage in `folder`, loopback only, DICOMweb at /dicom-web/."""
    folder.mkdir(parents=True, exist_ok=True)
    lua = folder / "filter.lua"
    lua.write_text(_FILTER_LUA.replace("{flag}", json.dumps(str(folder / REFUSE_FILE)))
                   .replace("{token}", json.dumps(token) if token else "nil"))
    config = {
        "Name": "SpineCascade local PACS",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "LuaScripts": [str(lua)],
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def start_orthanc(config: Path, log_file: Path) -> subprocess.Popen:
    """Start Orthanc in a process group of its own (so that it can be stopped as a whole)."""
    binary = orthanc_binary()
    if binary is None:
        raise PacsError("Orthanc is not installed: apt-get install -y orthanc orthanc-dicomweb")
    with open(log_file, "ab") as out:
        return subprocess.Popen([binary, str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_up(url: str, auth: tuple[str, str] | None, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PacsError(f"Orthanc exited with status {process.returncode}")
        try:
            if requests.get(f"{url}/system", auth=auth, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise PacsError(f"Orthanc did not answer at {url} within {timeout:.0f} s")


def store(url: str, auth: tuple[str, str] | None, data: bytes) -> dict:
    """Store one DICOM file through Orthanc's REST API; returns its answer (ID, ParentSeries, ...)."""
    answer = requests.post(f"{url}/instances", data=data, auth=auth, timeout=30)
    answer.raise_for_status()
    return answer.json()


def load_samples(url: str, auth: tuple[str, str] | None, samples: Path, spacing_mm: float) -> int:
    """Store each image of `samples` as a DX film (patient id from its content, so reloading adds nothing)."""
    from spinecascade.io.images import load_image
    from tools.dx_film import dx_dataset

    stored = 0
    for path in sorted(p for p in samples.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        patient_id = "SC-" + hashlib.sha256(path.read_bytes()).hexdigest()[:10]
        found = requests.post(f"{url}/tools/find", auth=auth, timeout=30,
                              json={"Level": "Patient", "Query": {"PatientID": patient_id}})
        found.raise_for_status()
        if found.json():
            continue
        pixels = load_image(path).to_uint8()
        film = dx_dataset(pixels, spacing_mm, patient_id=patient_id, patient_name=f"Sample^{path.stem[:40]}",
                          description=f"AP spine ({path.name})")
        buffer = io.BytesIO()
        film.save_as(buffer, write_like_original=False)
        store(url, auth, buffer.getvalue())
        stored += 1
        log.info("stored %s as DX film, series %s", path.name, film.SeriesInstanceUID)
    return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start a local Orthanc with DICOMweb and load the sample films.")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"Orthanc's storage (default {DEFAULT_DIR})")
    parser.add_argument("--port", type=int, default=8042, help="HTTP port on 127.0.0.1 (default 8042)")
    parser.add_argument("--dicom-port", type=int, default=4242, help="DICOM port (default 4242)")
    parser.add_argument("--samples", type=Path, default=Path(__file__).resolve().parents[1] / "sample_studies")
    parser.add_argument("--spacing", type=float, default=SAMPLE_SPACING_MM,
                        help=f"pixel spacing in mm written into the sample films (default {SAMPLE_SPACING_MM})")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the app folder holds the `tools` package
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    url = f"http://127.0.0.1:{args.port}"
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", args.port)) == 0:
            print(f"error: port {args.port} is taken (the Debian package's own Orthanc service? stop it, or use "
                  "ORTHANC_PORT=8043)", file=sys.stderr)
            return 1
    try:
        process = start_orthanc(write_config(args.dir, args.port, args.dicom_port), args.dir / "orthanc.log")
        wait_until_up(url, None, process)
    except PacsError as exc:
        print(f"error: {exc} (log: {args.dir / 'orthanc.log'})", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop Orthanc too (the finally below)
    try:
        stored = load_samples(url, None, args.samples, args.spacing)
        print(f"Orthanc is running at {url} (DICOMweb: {url}/dicom-web; {stored} sample film(s) added, storage in "
              f"{args.dir}).\nServe it with:  make serve STUDIES={url}/dicom-web\nStop it with Ctrl-C.")
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
