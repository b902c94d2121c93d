"""SpineCascade: vertebral corner landmarks and Cobb angles on spinal X-rays.

The top-level package imports neither torch nor SimpleITK, so that the data model, the label formats and the
Cobb angles can be used from 3D Slicer's Python without the method's heavy dependencies.
"""

__version__ = "0.1.0"
