"""The one Predictor of a process, shared by inference, scoring and active learning.

It is loaded on first use (the processes MONAI Label starts for training never need it) and reloaded when
training replaces the model file, so the next request uses the new model without a restart. A lock makes
the predictor safe to share between the server's threads.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from spinecascade.errors import ModelFileError
from spinecascade.io.images import Radiograph
from spinecascade.method.prediction import Prediction, Predictor
from spinecascade.synthetic import make_spine

log = logging.getLogger(__name__)

Signature = tuple[int, int, int]


class LandmarkModel:
    def __init__(self, path: Path, device: str | None = None) -> None:
        self.path = path
        self.device = device
        self._lock = threading.Lock()
        self._predictor: Predictor | None = None
        self._signature: Signature | None = None

    def is_available(self) -> bool:
        return self.path.is_file()

    @property
    def version(self) -> str:
        """The first 12 hex digits of the weights' SHA-256, as the predictions report it."""
        with self._lock:
            return self._current().version

    def load(self, path: str) -> Radiograph:
        """The film as the predictor reads it (a large JPEG decoded at a reduced size)."""
        with self._lock:
            predictor = self._current()
        return predictor.load(path)

    def predict(self, radiograph: Radiograph) -> Prediction:
        with self._lock:
            predictor = self._current()
            prediction = predictor.predict(radiograph)
        prediction.model = {**prediction.model, "device": str(predictor.device)}
        return prediction

    def warm_up(self) -> None:
        """Load the model and run it once, so that the first client does not wait for either."""
        started = time.perf_counter()
        spine = make_spine(seed=0, width=512, height=1280)
        prediction = self.predict(Radiograph(spine.image, source="warm-up"))
        log.info("model %s ready in %.1f s", prediction.model.get("version"), time.perf_counter() - started)

    def _file_signature(self) -> Signature:
        try:
            stat = self.path.stat()
        except OSError:
            raise ModelFileError(f"{self.path}: no such model file") from None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def _current(self) -> Predictor:
        """The predictor for the file as it is now; called with the lock held."""
        signature = self._file_signature()
        while signature != self._signature:
            try:
                predictor = Predictor(self.path, device=self.device)
            except ModelFileError:
                if self._predictor is None:
                    raise
                # Keep serving the model in memory; try the file again only once it changes.
                log.exception("cannot load the new model file %s; still serving version %s",
                              self.path, self._predictor.version)
                self._signature = signature
                break
            loaded = self._file_signature()
            if loaded != signature:  # replaced while loading: weights and version may disagree
                signature = loaded
                continue
            if self._predictor is not None and predictor.version != self._predictor.version:
                log.info("model file changed: now serving version %s (was %s)", predictor.version,
                         self._predictor.version)
            self._predictor, self._signature = predictor, signature
        assert self._predictor is not None
        return self._predictor
