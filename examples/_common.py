"""Shared plumbing for the examples: quick mode, figure saving, checks and a clear skip.

Every example runs as a plain script (``python examples/01_derivatives.py``). Quick mode
(``MML_EXAMPLES_QUICK=1`` or ``--quick``) shrinks sizes and iteration counts so that the test suite
can run all of them in a few seconds each; ``MML_EXAMPLES_FIGDIR`` sends the figure elsewhere
(the tests use a temporary folder). Figures are written with matplotlib's Agg backend, so no
display is needed.
"""

from __future__ import annotations

import io
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
QUICK = os.environ.get("MML_EXAMPLES_QUICK", "0") not in ("", "0") or "--quick" in sys.argv
FIG_DIR = os.environ.get("MML_EXAMPLES_FIGDIR") or os.path.join(HERE, "figures")
SKIP_EXIT_CODE = 77  # the exit code of an example whose library family is missing
_START = time.perf_counter()

try:  # run from a checkout without installing: put the repository root on the path
    import jaxopt_mml  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(HERE))


def pick(full, quick):
    """``quick`` in quick mode, ``full`` otherwise."""
    return quick if QUICK else full


def require(*names: str) -> None:
    """Exit with code 77 and a message if ``jaxopt_mml`` lacks any of ``names``."""
    import jaxopt_mml as mml

    missing = [name for name in names if not hasattr(mml, name)]
    if missing:
        print(f"SKIP: jaxopt_mml has no {', '.join(missing)} yet (its family is not merged)")
        sys.exit(SKIP_EXIT_CODE)


def check(label: str, ok, detail: str = "") -> None:
    """Print a named check and stop the script with an error if it fails."""
    ok = bool(ok)
    print(f"  check {'ok  ' if ok else 'FAIL'} {label}" + (f"  ({detail})" if detail else ""))
    if not ok:
        raise SystemExit(f"check failed: {label} {detail}")


def savefig(fig, name: str, dpi: int = 80) -> str:
    """Save ``fig`` as ``FIG_DIR/name`` and close it: a PNG of 256 colours, to keep it small."""
    from PIL import Image  # matplotlib's own dependency

    os.makedirs(FIG_DIR, exist_ok=True)
    path = os.path.join(FIG_DIR, name)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    plt.close(fig)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(f"figure: {path}")
    return path


def finish() -> None:
    """Print the wall time of the whole script (imports and compilation included)."""
    mode = "quick" if QUICK else "full"
    print(f"done ({mode} mode) in {time.perf_counter() - _START:.1f} s")
