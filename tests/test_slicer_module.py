"""Static checks of the Slicer extension's files, the parts that only run inside the Slicer application.

SpineCascade.py imports Qt and the Slicer application, so it is parsed here rather than imported: the widget
may only use widgets the .ui file defines, and the build must install every file the module needs.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXTENSION = REPO / "slicer_extension"
MODULE = EXTENSION / "SpineCascade"


def module_tree() -> ast.Module:
    return ast.parse((MODULE / "SpineCascade.py").read_text(encoding="utf-8"))


def test_module_has_the_scripted_module_classes():
    tree = module_tree()
    definitions = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    classes = {node.name: [ast.unparse(base) for base in node.bases] for node in definitions}
    assert classes["SpineCascade"] == ["ScriptedLoadableModule"]
    assert classes["SpineCascadeWidget"][0] == "ScriptedLoadableModuleWidget"
    assert classes["SpineCascadeTest"] == ["ScriptedLoadableModuleTest"]
    imported = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert "SpineCascadeLogic" in imported  # the logic class lives in SpineCascadeLib, testable without Slicer


def test_widget_uses_only_widgets_the_ui_defines():
    ui = ET.parse(MODULE / "Resources" / "UI" / "SpineCascade.ui").getroot()
    defined = {widget.get("name") for widget in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "SpineCascade.py").read_text(encoding="utf-8")))
    assert used, "the widget should use the .ui file"
    assert used <= defined, f"used but not in the .ui file: {sorted(used - defined)}"
    assert ui.find("widget").get("class") == "qMRMLWidget"  # so that setMRMLScene reaches the selectors


def test_build_installs_every_module_file():
    listed = set(re.findall(r"[\w/.${}]+\.(?:py|png|ui)", (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")))
    listed = {name.replace("${MODULE_NAME}", "SpineCascade") for name in listed}
    present = {str(path.relative_to(MODULE)) for path in MODULE.rglob("*") if path.suffix in (".py", ".png", ".ui")}
    present = {name for name in present if "__pycache__" not in name}
    assert listed == present


def test_extension_metadata():
    text = (EXTENSION / "CMakeLists.txt").read_text(encoding="utf-8")
    for key in ("EXTENSION_NAME", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({key}\s", text), key
    assert re.search(r"set\(EXTENSION_DEPENDS\s+\"?NA\"?\)", text)
    assert "add_subdirectory(SpineCascade)" in text


def test_icon_is_a_128_pixel_png():
    with Image.open(MODULE / "Resources" / "Icons" / "SpineCascade.png") as icon:
        assert (icon.format, icon.size) == ("PNG", (128, 128))


BOOTSTRAP_PROBE = """
import sys
sys.path = [p for p in sys.path if p.rstrip("/") != {lib!r}]
sys.path.insert(0, {module!r})
try:
    import SpineCascadeLib
except ImportError as exc:
    print("ImportError:", exc)
else:
    print(SpineCascadeLib.LIBRARY_PATH)
"""


def bootstrap(module: Path, environment: dict[str, str]) -> str:
    """What importing SpineCascadeLib from `module` says, in a Python where spinecascade is not installed."""
    lib = str(REPO / "lib")
    code = BOOTSTRAP_PROBE.format(lib=lib, module=str(module))
    env = {key: value for key, value in os.environ.items() if key != "SPINECASCADE_LIB"} | environment
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_library_comes_from_the_checkout_the_extension_lies_in():
    assert bootstrap(MODULE, {}) == str(REPO / "lib" / "spinecascade")


def test_library_comes_from_spinecascade_lib_outside_a_checkout(tmp_path):
    shutil.copytree(MODULE / "SpineCascadeLib", tmp_path / "SpineCascadeLib")
    assert bootstrap(tmp_path, {"SPINECASCADE_LIB": str(REPO / "lib")}) == str(REPO / "lib" / "spinecascade")
    message = bootstrap(tmp_path, {})
    assert message.startswith("ImportError:") and "SPINECASCADE_LIB" in message and "pip_install" in message
