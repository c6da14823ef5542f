"""An isolated, resource-bounded Python for LM-generated code (see ``docs/security.md``).

>>> from dspex.sandbox import PythonSandbox
>>> with PythonSandbox(timeout=10, memory_mb=256) as sandbox:
...     sandbox("x = 6 * 7\\nx")
42
"""

from dspex.sandbox.interpreter import FinalOutput, PythonSandbox
from dspex.sandbox.launch import Limits, bwrap_executable

__all__ = ["FinalOutput", "Limits", "PythonSandbox", "bwrap_executable"]
