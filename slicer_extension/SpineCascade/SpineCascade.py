"""SpineCascade: vertebral corner landmarks and Cobb angles on spine X-rays, from a MONAI Label server.

The scripted module's Qt side. All behaviour lives in SpineCascadeLib (logic without GUI, tested on real MRML
outside Slicer); the widget here only wires buttons to it and shows what it reports. The settings live in the
scene's parameter node (SpineCascadeLib.parameters): the widget writes what the user changes there and shows
what the node holds, so a loaded scene brings its settings back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import qt
import slicer
import SpineCascadeLib  # first: it makes the spinecascade library importable (see SpineCascadeLib.bootstrap)
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from SpineCascadeLib import testdata
from SpineCascadeLib.geometry import pixels_to_ras
from SpineCascadeLib.logic import (
    IMAGE_ID_ATTRIBUTE,
    SpineCascadeLogic,
    TrainingStatus,
)
from SpineCascadeLib.parameters import DEFAULT_SERVER, SERVER_URL, DisplayOptions

from spinecascade.io.labels import label_from_json_dict
from spinecascade.landmarks import point_names
from spinecascade.measurement.cobb import cobb_angles

SERVER_SETTING = "SpineCascade/ServerUrl"  # the last server used, for new scenes
TRAINING_POLL_MS = 2000

__all__ = ["SpineCascade", "SpineCascadeLogic", "SpineCascadeTest", "SpineCascadeWidget"]


class SpineCascade(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SpineCascade"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = ["Markups"]
        self.parent.contributors = ["SpineCascade developers"]
        self.parent.helpText = (
            "Places the 68 vertebral corners (T1-L5) on a spine X-ray with the SpineCascade MONAI Label server, "
            "measures the PT, MT and TL Cobb angles (AASCE method) and keeps them up to date while you move "
            "points. Orange points are ones the model is unsure of; red rings mark points the server's quality "
            "check flags, with the reasons in a banner. Submit the corrected landmarks as the "
            "image's label, fetch the next image to label, and retrain the model. The settings are saved with "
            "the scene.<br>"
            f"spinecascade library: {SpineCascadeLib.LIBRARY_PATH}"
        )
        self.parent.acknowledgementText = (
            "Cobb angles follow the AASCE challenge's measurement; landmarks come from the SpineCascade "
            "two-step cascade served by MONAI Label."
        )


class SpineCascadeWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: every button calls the logic; every failure is shown and leaves the scene untouched."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: SpineCascadeLogic | None = None
        self.ui: Any = None
        self.training_timer: Any = None
        self.parameter_node: Any = None
        self._showing_parameters = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/SpineCascade.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)

        self.logic = SpineCascadeLogic(slicer.mrmlScene)
        self.logic.on_change = self.on_annotation_changed

        self.ui.connectButton.connect("clicked(bool)", self.on_connect)
        self.ui.serverUrlLineEdit.connect("returnPressed()", self.on_connect)
        self.ui.serverUrlLineEdit.connect("editingFinished()", self.update_parameter_node_from_gui)
        self.ui.volumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.on_volume_changed)
        self.ui.autoLandmarkButton.connect("clicked(bool)", self.on_auto_landmark)
        self.ui.levelsUpButton.connect("clicked(bool)", lambda: self.on_move_levels(-1))
        self.ui.levelsDownButton.connect("clicked(bool)", lambda: self.on_move_levels(1))
        self.ui.uncertaintyThresholdSpinBox.connect("valueChanged(double)", self.update_parameter_node_from_gui)
        for box in (self.ui.showCornersCheckBox, self.ui.showLinesCheckBox, self.ui.showLabelsCheckBox):
            box.connect("toggled(bool)", self.update_parameter_node_from_gui)
        self.ui.loadMarkupsButton.connect("clicked(bool)", self.on_load_markups)
        self.ui.saveMarkupsButton.connect("clicked(bool)", self.on_save_markups)
        self.ui.submitButton.connect("clicked(bool)", self.on_submit)
        self.ui.nextImageButton.connect("clicked(bool)", self.on_next_image)
        self.ui.trainButton.connect("clicked(bool)", self.on_train)

        self.training_timer = qt.QTimer()
        self.training_timer.setInterval(TRAINING_POLL_MS)
        self.training_timer.connect("timeout()", self.on_poll_training)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.on_scene_start_close)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.on_scene_end_close)
        self.initialize_parameter_node()
        self.show_annotation(None)

    def cleanup(self) -> None:
        self.removeObservers()
        if self.training_timer is not None:
            self.training_timer.stop()
        if self.logic is not None:
            self.logic.close()

    def enter(self) -> None:
        self.initialize_parameter_node()

    def on_scene_start_close(self, _caller, _event) -> None:
        self.logic.close()
        self.show_annotation(None)

    def on_scene_end_close(self, _caller, _event) -> None:
        if self.parent.isEntered:
            self.initialize_parameter_node()

    # ------------------------------------------------------------------ parameter node

    def initialize_parameter_node(self) -> None:
        """Observe the scene's parameter node; a new scene gets the server used last."""
        parameters = self.logic.parameters
        if not parameters.is_set(SERVER_URL):
            parameters.server_url = qt.QSettings().value(SERVER_SETTING, DEFAULT_SERVER)
        if self.parameter_node is not parameters.node:
            modified = vtk.vtkCommand.ModifiedEvent
            if self.parameter_node is not None:
                self.removeObserver(self.parameter_node, modified, self.update_gui_from_parameter_node)
            self.parameter_node = parameters.node
            self.addObserver(self.parameter_node, modified, self.update_gui_from_parameter_node)
        self.update_gui_from_parameter_node()

    def update_gui_from_parameter_node(self, _caller=None, _event=None) -> None:
        parameters = self.logic.parameters
        display = parameters.display
        self._showing_parameters = True
        try:
            self.ui.serverUrlLineEdit.text = parameters.server_url
            self.ui.volumeSelector.setCurrentNode(parameters.xray)
            self.ui.uncertaintyThresholdSpinBox.value = parameters.threshold
            self.ui.showCornersCheckBox.checked = display.corners
            self.ui.showLinesCheckBox.checked = display.lines
            self.ui.showLabelsCheckBox.checked = display.labels
        finally:
            self._showing_parameters = False
        self.update_buttons()

    def update_parameter_node_from_gui(self, _value: Any = None) -> None:
        if self._showing_parameters:
            return
        parameters = self.logic.parameters
        was_modifying = parameters.node.StartModify()
        try:
            parameters.server_url = self.ui.serverUrlLineEdit.text
            parameters.xray = self.volume()
            parameters.threshold = self.ui.uncertaintyThresholdSpinBox.value
            parameters.display = DisplayOptions(
                corners=self.ui.showCornersCheckBox.checked,
                lines=self.ui.showLinesCheckBox.checked,
                labels=self.ui.showLabelsCheckBox.checked,
            )
        finally:
            parameters.node.EndModify(was_modifying)

    # ------------------------------------------------------------------ helpers

    def run(self, what: str, action: Callable[[], Any]) -> Any:
        """Run one user action with a wait cursor; on failure say why (the logic left the scene untouched)."""
        try:
            with slicer.util.WaitCursor():
                return action()
        except Exception as exc:  # the GUI's edge: whatever went wrong, the user must read why
            logging.warning("SpineCascade: %s failed: %s", what, exc)
            self.status(f"{what} failed: {exc}")
            slicer.util.errorDisplay(f"{what} failed:\n\n{exc}", windowTitle="SpineCascade")
            return None
        finally:
            self.update_buttons()

    def status(self, text: str) -> None:
        self.ui.statusLabel.text = text
        slicer.util.showStatusMessage(text, 5000)

    def volume(self):
        return self.ui.volumeSelector.currentNode()

    def update_buttons(self) -> None:
        connected = self.logic.client is not None
        volume = self.volume()
        annotated = volume is not None and self.logic.has_annotation(volume)
        self.ui.autoLandmarkButton.enabled = connected and volume is not None
        self.ui.loadMarkupsButton.enabled = volume is not None
        self.ui.saveMarkupsButton.enabled = annotated
        self.ui.levelsUpButton.enabled = annotated
        self.ui.levelsDownButton.enabled = annotated
        self.ui.submitButton.enabled = connected and annotated
        self.ui.nextImageButton.enabled = connected
        self.ui.trainButton.enabled = connected and not self.training_timer.isActive()

    def show_annotation(self, annotation) -> None:
        self.ui.angleTableView.setMRMLTableNode(annotation.table if annotation is not None else None)
        self.show_review_banner(annotation)
        if annotation is not None:
            self.status(annotation.summary())

    def show_review_banner(self, annotation) -> None:
        """The warning text of the server's review flag; hidden when the prediction needs no review."""
        text = annotation.review_banner() if annotation is not None else ""
        self.ui.reviewBannerLabel.text = text
        self.ui.reviewBannerLabel.visible = bool(text)

    # ------------------------------------------------------------------ actions

    def on_connect(self) -> None:
        self.update_parameter_node_from_gui()
        info = self.run("Connecting", self.logic.connect)
        if info is None:
            return
        qt.QSettings().setValue(SERVER_SETTING, self.logic.client.url)
        self.ui.modelsLabel.text = ", ".join(sorted(info.models)) + f" (using {self.logic.model})"
        self.status(f"Connected to {info.name} {info.version} at {self.logic.client.url}.")

    def on_volume_changed(self, volume) -> None:
        self.update_parameter_node_from_gui()
        annotated = volume is not None and self.logic.has_annotation(volume)
        self.show_annotation(self.logic.annotation(volume) if annotated else None)
        self.update_buttons()

    def on_auto_landmark(self) -> None:
        volume = self.volume()
        if volume is not None and self.logic.has_annotation(volume):
            moved = len(self.logic.annotation(volume).moved)
            if moved and not slicer.util.confirmOkCancelDisplay(
                f"Replace the landmarks of {volume.GetName()}? Your {moved} moved points will be lost."
            ):
                return
        annotation = self.run("Auto-landmark", lambda: self.logic.auto_landmark(volume))
        if annotation is not None:
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            self.show_annotation(annotation)

    def on_move_levels(self, levels: int) -> None:
        volume = self.volume()
        annotation = self.run("Renaming the vertebrae", lambda: self.logic.move_levels(volume, levels))
        if annotation is not None:
            self.show_annotation(annotation)

    def on_annotation_changed(self, annotation) -> None:
        if annotation.volume is self.volume():
            self.show_review_banner(annotation)
            self.status(annotation.summary())

    def on_submit(self) -> None:
        volume = self.volume()
        answer = self.run("Submitting the correction", lambda: self.logic.submit_correction(volume))
        if answer is not None:
            image_id = volume.GetAttribute(IMAGE_ID_ATTRIBUTE)
            self.status(f"Stored the landmarks of {volume.GetName()} as the final label of {image_id!r}.")

    def on_next_image(self) -> None:
        fetched = self.run("Fetching the next image", lambda: [self.logic.next_image()])
        if fetched is None:
            return
        volume = fetched[0]
        if volume is None:
            self.status(f"The {self.logic.strategy} strategy has no image left to label.")
            return
        self.ui.volumeSelector.setCurrentNode(volume)
        slicer.util.setSliceViewerLayers(background=volume, fit=True)
        annotation = self.run("Auto-landmark", lambda: self.logic.auto_landmark(volume))
        if annotation is not None:
            self.show_annotation(annotation)

    def on_save_markups(self) -> None:
        volume = self.volume()
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), "Save landmarks", f"{volume.GetName()}.mrk.json", "Markups (*.mrk.json)"
        )
        if path and self.run("Saving the landmarks", lambda: self.logic.save_markups(volume, path) or True):
            self.status(f"Saved the landmarks of {volume.GetName()} to {path}.")

    def on_load_markups(self) -> None:
        volume = self.volume()
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Load landmarks", "", "Markups (*.mrk.json *.json)"
        )
        if path:
            annotation = self.run("Loading the landmarks", lambda: self.logic.load_markups(volume, path))
            if annotation is not None:
                self.show_annotation(annotation)

    def on_train(self) -> None:
        status = self.run("Starting the training", self.logic.start_training)
        if status is not None:
            self.show_training(status)
            self.training_timer.start()
            self.update_buttons()

    def on_poll_training(self) -> None:
        try:
            status = self.logic.training_status()
        except Exception as exc:  # polling must stop quietly on any failure, with the reason shown
            status = TrainingStatus("UNKNOWN", None, f"cannot read the training status: {exc}")
        self.show_training(status)
        if not status.running:
            self.training_timer.stop()
            self.update_buttons()

    def show_training(self, status: TrainingStatus) -> None:
        bar = self.ui.trainingProgressBar
        if status.running and status.fraction is None:
            bar.setRange(0, 0)
        else:
            bar.setRange(0, 100)
            bar.value = round(100 * (status.fraction or 0.0))
        self.status(f"Training: {status.state.lower()}: {status.message}")


class SpineCascadeTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Reload and Test): the tests/test_slicer_*.py flow on the application's scene.

    With the environment variable SPINECASCADE_TEST_SERVER set to a server address it also landmarks,
    corrects and submits an image on that server and reads the label back.
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_answer_edit_and_export()
        self.setUp()
        self.test_markups_file_round_trip()
        self.setUp()
        self.test_settings_are_saved_with_the_scene()
        self.setUp()
        self.test_review_flag()
        if os.environ.get("SPINECASCADE_TEST_SERVER"):
            self.setUp()
            self.test_server_round_trip()

    def test_answer_edit_and_export(self) -> None:
        self.delayDisplay("Placing a server answer on a made-up X-ray")
        width, height = 400, 1000
        volume = testdata.add_example_volume(slicer.mrmlScene, width, height, spacing=(0.3, 0.2), origin=(5, -7, 2))
        landmarks = testdata.example_landmarks(width, height)
        answer = testdata.example_answer(landmarks, width, height, testdata.example_uncertainty())
        logic = SpineCascadeLogic(slicer.mrmlScene)
        annotation = logic.apply_answer(volume, answer)
        points = annotation.points
        self.assertEqual([points.GetNthControlPointLabel(i) for i in range(68)], point_names())
        slicer.util.setSliceViewerLayers(background=volume, fit=True)

        self.delayDisplay("Moving L3 top-left: the angles must follow")
        moved = landmarks.copy()
        moved[14, 0] += (12.0, -8.0)
        points.SetNthControlPointPosition(point_names().index("L3 top-left"), *pixels_to_ras(volume, moved[14, 0])[0])
        expected = cobb_angles(moved, height)
        for got, want in zip(annotation.cobb.angles, expected.angles, strict=True):
            self.assertEqual(got.end_vertebrae, want.end_vertebrae)
            self.assertAlmostEqual(got.degrees, want.degrees, places=5)

        self.delayDisplay("Exporting the edited landmarks as a label")
        label = label_from_json_dict(logic.export_label(volume))
        np.testing.assert_allclose(label.landmarks, moved, atol=1e-9)
        logic.close()
        self.delayDisplay("Test passed")

    def test_markups_file_round_trip(self) -> None:
        self.delayDisplay("Saving and loading the landmarks as .mrk.json")
        volume = testdata.add_example_volume(slicer.mrmlScene)
        logic = SpineCascadeLogic(slicer.mrmlScene)
        annotation = logic.apply_answer(volume, testdata.example_answer(testdata.example_landmarks(), 400, 1000))
        path = os.path.join(slicer.app.temporaryPath, "SpineCascadeTest.mrk.json")
        logic.save_markups(volume, path)
        loaded = logic.load_markups(volume, path)
        np.testing.assert_allclose(loaded.landmarks, annotation.landmarks, atol=1e-9)
        logic.close()
        self.delayDisplay("Test passed")

    def test_settings_are_saved_with_the_scene(self) -> None:
        self.delayDisplay("Saving the module's settings in a scene bundle and loading it back")
        logic = SpineCascadeLogic(slicer.mrmlScene)
        logic.set_threshold(35.5)
        logic.set_display(DisplayOptions(corners=True, lines=False, labels=True))
        path = os.path.join(slicer.app.temporaryPath, "SpineCascadeTest.mrb")
        self.assertTrue(slicer.util.saveScene(path))
        slicer.mrmlScene.Clear()
        self.assertEqual(logic.display, DisplayOptions())
        slicer.util.loadScene(path)
        self.assertEqual(logic.threshold, 35.5)
        self.assertEqual(logic.display, DisplayOptions(corners=True, lines=False, labels=True))
        logic.close()
        self.delayDisplay("Test passed")

    def test_review_flag(self) -> None:
        self.delayDisplay("A prediction the server flags for review: banner and red rings")
        volume = testdata.add_example_volume(slicer.mrmlScene)
        answer = testdata.example_answer(testdata.example_landmarks(), 400, 1000)
        answer["quality"] = {"review_needed": True, "reasons": ["spine runs off the film"], "flagged_landmarks": [0, 5]}
        logic = SpineCascadeLogic(slicer.mrmlScene)
        annotation = logic.apply_answer(volume, answer)
        self.assertIn("spine runs off the film", annotation.review_banner())
        rings = annotation.flagged_points
        self.assertEqual([rings.GetNthControlPointLabel(i) for i in range(rings.GetNumberOfControlPoints())],
                         [point_names()[0], point_names()[5]])

        self.delayDisplay("Levels down: every vertebra renamed a level down, L5 extrapolated and ringed")
        renamed = logic.move_levels(volume, 1)
        self.assertIn("1 level(s) down", renamed.review_banner())
        self.assertEqual(sorted(renamed.quality.flagged), [1, 64, 65, 66, 67])
        logic.close()
        self.delayDisplay("Test passed")

    def test_server_round_trip(self) -> None:
        self.delayDisplay("Next image, auto-landmark, move a point, submit, read back")
        logic = SpineCascadeLogic(slicer.mrmlScene)
        logic.connect(os.environ["SPINECASCADE_TEST_SERVER"])
        volume = logic.next_image()
        self.assertIsNotNone(volume, "the server has no image to label")
        annotation = logic.auto_landmark(volume)
        moved = annotation.landmarks.copy()
        moved[0, 0] += (4.0, 3.0)
        annotation.points.SetNthControlPointPosition(0, *pixels_to_ras(volume, moved[0, 0])[0])
        logic.submit_correction(volume)
        stored = label_from_json_dict(logic.client.get_label(volume.GetAttribute(IMAGE_ID_ATTRIBUTE)))
        np.testing.assert_allclose(stored.landmarks, moved, atol=1e-6)
        logic.close()
        self.delayDisplay("Test passed")
