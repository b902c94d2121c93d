"""How fast the scoliosis app answers /infer on this machine: round-trip times and requests per second.

    python apps/scoliosis/benchmark.py [--model M] [--image IMG] [--requests 30] [--clients 4] [--json]

Starts `monailabel start_server` with this app on a free loopback port, serving a temporary datastore that
holds only IMG, and measures real HTTP round trips: one client asking by datastore id, one client uploading
the file, then CLIENTS clients asking by id at once. The server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import requests

from spinecascade.method.model_file import shipped_model_path

APP = Path(__file__).resolve().parent
DEFAULT_IMAGE = APP / "sample_studies" / "sunhl-1th-26-Jul-2016-70_A_AP.jpg"
TASK = "vertebral_landmarks"

log = logging.getLogger("benchmark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=shipped_model_path(),
                        help="model file (default: the shipped one)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the radiograph to send")
    parser.add_argument("--requests", type=int, default=30, help="requests per measurement (default 30)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for the throughput (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the server (default 2)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for path, what in ((args.model, "model"), (args.image, "image")):
        if not path.is_file():
            parser.error(f"no {what} file at {path}")

    load_before = os.getloadavg()  # other work on the machine slows every figure below
    with tempfile.TemporaryDirectory(prefix="scoliosis-benchmark-") as work, \
            serve(Path(work), args.model.resolve(), args.image, args.threads) as url:
        image_id = args.image.stem
        upload = (args.image.name, args.image.read_bytes())

        def by_id() -> dict:
            return _infer(url, params={"image": image_id})

        def by_upload() -> dict:
            return _infer(url, files={"file": upload})

        for _ in range(3):  # first requests of a fresh process are slower than the rest
            by_id()
        single = _sequential(by_id, args.requests)
        uploads = _sequential(by_upload, args.requests)
        throughput = _concurrent(by_id, args.requests, args.clients)
        answer = by_id()

    report = {
        "image": {"file": str(args.image), "width": answer["image"]["width"], "height": answer["image"]["height"]},
        "model": answer["model"].get("version"),
        "device": answer["model"].get("device"),
        "threads": args.threads,
        "load_average": [round(v, 2) for v in load_before],
        "cpus": os.cpu_count(),
        "by_id_ms": single["rtt"],
        "server_ms": single["server"],
        "upload_ms": uploads["rtt"],
        "concurrent": throughput,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_text(report, args.requests))
    return 0


def _infer(url: str, **kwargs) -> dict:
    response = requests.post(f"{url}/infer/{TASK}", params={"output": "json", **kwargs.pop("params", {})},
                             timeout=300, **kwargs)
    response.raise_for_status()
    return response.json()


def _stats(values: list[float]) -> dict:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 1), "p90": round(p90, 1), "min": round(ordered[0], 1),
            "max": round(ordered[-1], 1)}


def _sequential(call: Callable[[], dict], n: int) -> dict:
    """Round trips, and the medians of the server's own timings (decode, preprocess, network, ...)."""
    rtt, timings = [], []
    for _ in range(n):
        started = time.perf_counter()
        answer = call()
        rtt.append((time.perf_counter() - started) * 1e3)
        timings.append(answer["timings_ms"])
    parts = {key: round(statistics.median(t[key] for t in timings), 1) for key in timings[0]}
    return {"rtt": _stats(rtt), "server": parts}


def _concurrent(call: Callable[[], dict], n: int, clients: int) -> dict:
    latencies: list[float] = []

    def timed(_: int) -> None:
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1e3)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(timed, range(n)))
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": n, "requests_per_s": round(n / wall, 2), "rtt_ms": _stats(latencies)}


def _text(report: dict, n: int) -> str:
    image, single, upload, both = report["image"], report["by_id_ms"], report["upload_ms"], report["concurrent"]
    return "\n".join([
        f"image {image['file']} ({image['width']} x {image['height']} px), model {report['model']} on "
        f"{report['device']}, {report['threads']} torch thread(s); {report['cpus']} CPUs, load average "
        f"{report['load_average'][0]} before the run",
        f"by datastore id, {n} requests: median {single['median']} ms, p90 {single['p90']} ms round trip",
        "  server side (medians, ms): " + ", ".join(f"{k} {v}" for k, v in report["server_ms"].items()),
        f"by upload,       {n} requests: median {upload['median']} ms, p90 {upload['p90']} ms round trip",
        f"{both['clients']} concurrent clients, {both['requests']} requests: {both['requests_per_s']} requests/s "
        f"(median {both['rtt_ms']['median']} ms, p90 {both['rtt_ms']['p90']} ms round trip)",
    ])


@contextmanager
def serve(work: Path, model: Path, image: Path, threads: int) -> Iterator[str]:
    """A server on a free loopback port with a copy of the app and a datastore holding only `image`."""
    app, studies = work / "app", work / "studies"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("model", "logs", "bin", "sample_studies", "__pycache__"))
    studies.mkdir()
    shutil.copyfile(image, studies / image.name)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies",
               str(studies), "--host", "127.0.0.1", "--port", str(port), "--conf", "model_path", str(model),
               "--conf", "threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
           "MONAI_LABEL_SESSIONS": "false"}
    log.info("starting the server on port %d ...", port)
    with open(work / "server.log", "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, work / "server.log")
        log.info("server up; measuring ...")
        yield url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM lets the server shut down; SIGKILL then ends any task process it started meanwhile."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        with suppress(subprocess.TimeoutExpired):
            process.wait(30)


def _wait_until_up(url: str, process: subprocess.Popen, log_file: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log_file.read_text(errors='replace')[-4000:]}")
        try:
            if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(1)
    raise SystemExit(f"the server did not start within {timeout:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
