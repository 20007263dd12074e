"""The voice benchmarks (``bench/voice_calls.py``): ``latency`` and ``load``; see that file.

Run as ``python bench/voice.py``, a script's folder comes first on ``sys.path``, where this
file's name would shadow the ``voice`` package; so this launcher drops its folder from the path
and runs the benchmark from the project root.
"""

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))
runpy.run_path(str(HERE / "voice_calls.py"), run_name="__main__")
