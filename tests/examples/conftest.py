"""Put ``examples/`` on ``sys.path`` so that the tests import the studies' shared
package as the scripts do (``python examples/<study>.py`` runs with it first)."""
import sys
from pathlib import Path

EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)
