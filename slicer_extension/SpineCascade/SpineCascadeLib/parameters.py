"""The module's settings as a parameter node in the scene, so that they are saved and loaded with it.

Slicer's scripted-module convention: one singleton vtkMRMLScriptedModuleNode per scene, tagged with the module's
name and carrying a "ModuleName" attribute, holding the settings as text parameters and the selected X-ray as a
node reference. The slicer-core wheel has no `slicer.parameterNodeWrapper`, so `SpineCascadeParameters` gives
typed properties over the text itself; the same code runs in Slicer. A parameter that is missing (a new scene,
or one saved by an older version of the module) or unreadable (a hand-edited scene) reads as its default.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

MODULE_NAME = "SpineCascade"
DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_MODEL = "vertebral_landmarks"
DEFAULT_STRATEGY = "landmark_uncertainty"
# Points whose predicted uncertainty exceeds this many pixels are shown as needing a look.
DEFAULT_UNCERTAINTY_THRESHOLD_PX = 20.0

SERVER_URL = "ServerUrl"
MODEL = "Model"
STRATEGY = "Strategy"
THRESHOLD = "UncertaintyThresholdPx"
SHOW_CORNERS = "ShowCorners"
SHOW_LINES = "ShowLines"
SHOW_LABELS = "ShowLabels"
XRAY = "XRay"  # node reference role of the selected X-ray volume


@dataclass(frozen=True)
class DisplayOptions:
    """What is drawn: the corner points, the endplate lines of the Cobb angles, the points' names."""

    corners: bool = True
    lines: bool = True
    labels: bool = False


def parameter_node(scene):
    """The scene's SpineCascade parameter node, added (empty, so every setting reads as its default) if missing."""
    node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)  # CreateNodeByClass hands over a reference Python already holds
        node.SetSingletonTag(MODULE_NAME)
        node.SetName(MODULE_NAME)
        node = scene.AddNode(node)
    if node.GetAttribute("ModuleName") != MODULE_NAME:  # closing a scene resets singletons, attributes included
        node.SetAttribute("ModuleName", MODULE_NAME)
    return node


class SpineCascadeParameters:
    """Typed access to a parameter node's settings; each setter modifies the node (observers hear of it)."""

    def __init__(self, node) -> None:
        self.node = node

    def is_set(self, name: str) -> bool:
        return bool(self.node.GetParameter(name))

    # ------------------------------------------------------------------ server

    @property
    def server_url(self) -> str:
        return self.node.GetParameter(SERVER_URL) or DEFAULT_SERVER

    @server_url.setter
    def server_url(self, url: str) -> None:
        self.node.SetParameter(SERVER_URL, str(url).strip())

    @property
    def model(self) -> str:
        return self.node.GetParameter(MODEL) or DEFAULT_MODEL

    @model.setter
    def model(self, name: str) -> None:
        self.node.SetParameter(MODEL, str(name))

    @property
    def strategy(self) -> str:
        return self.node.GetParameter(STRATEGY) or DEFAULT_STRATEGY

    @strategy.setter
    def strategy(self, name: str) -> None:
        self.node.SetParameter(STRATEGY, str(name))

    # ------------------------------------------------------------------ display

    @property
    def threshold(self) -> float:
        """Uncertainty in pixels above which a point is shown as uncertain."""
        text = self.node.GetParameter(THRESHOLD)
        try:
            value = float(text) if text else DEFAULT_UNCERTAINTY_THRESHOLD_PX
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            logger.warning("SpineCascade: parameter %s=%r is not a number >= 0; using %g px",
                           THRESHOLD, text, DEFAULT_UNCERTAINTY_THRESHOLD_PX)
            return DEFAULT_UNCERTAINTY_THRESHOLD_PX
        return value

    @threshold.setter
    def threshold(self, pixels: float) -> None:
        value = float(pixels)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"uncertainty threshold {pixels!r}: expected a number of pixels >= 0")
        self.node.SetParameter(THRESHOLD, repr(value))

    @property
    def display(self) -> DisplayOptions:
        defaults = DisplayOptions()
        return DisplayOptions(
            corners=self._flag(SHOW_CORNERS, defaults.corners),
            lines=self._flag(SHOW_LINES, defaults.lines),
            labels=self._flag(SHOW_LABELS, defaults.labels),
        )

    @display.setter
    def display(self, options: DisplayOptions) -> None:
        was_modifying = self.node.StartModify()  # one Modified event for the three flags
        try:
            for name, value in ((SHOW_CORNERS, options.corners), (SHOW_LINES, options.lines),
                                (SHOW_LABELS, options.labels)):
                self.node.SetParameter(name, "true" if value else "false")
        finally:
            self.node.EndModify(was_modifying)

    def _flag(self, name: str, default: bool) -> bool:
        text = self.node.GetParameter(name).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        if text:
            logger.warning("SpineCascade: parameter %s=%r is not true or false; using %s", name, text, default)
        return default

    # ------------------------------------------------------------------ the selected X-ray

    @property
    def xray(self) -> Any:
        return self.node.GetNodeReference(XRAY)

    @xray.setter
    def xray(self, volume: Any) -> None:
        self.node.SetNodeReferenceID(XRAY, volume.GetID() if volume is not None else None)
