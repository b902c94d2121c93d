"""The SpineCascade Slicer module's behaviour, importable without the Slicer application or Qt.

Importing the package first makes the `spinecascade` library importable (see `bootstrap`), because every
module here uses its landmark order, label format and Cobb angles instead of keeping copies of them.
"""

from SpineCascadeLib.bootstrap import ensure_spinecascade

LIBRARY_PATH = ensure_spinecascade()
