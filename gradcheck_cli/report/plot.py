"""``explain --plot FILE.png``: analytic and numerical Jacobians and their difference.

matplotlib is an optional extra (``pip install 'gradcheck-cli[plot]'``), imported only here
and only when a plot is asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradcheck_cli.errors import UsageError


def draw(explanation: Any, path: str) -> None:
    """Three panels: analytic, numeric, analytic - numeric (shared colour scale for the first two)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise UsageError("--plot needs matplotlib, an optional extra: pip install 'gradcheck-cli[plot]' "
                         "(or pip install matplotlib), then run the command again.") from None
    if explanation.analytic is None or explanation.numeric is None:
        raise UsageError(f"Nothing to plot for '{explanation.spec.name}': its derivative could not be computed "
                         f"(see the ERROR row).")
    analytic = np.atleast_2d(explanation.analytic)
    numeric = np.atleast_2d(explanation.numeric)
    limit = float(np.nanmax(np.abs(np.concatenate([analytic.ravel(), numeric.ravel()])))) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    what = "Jacobian dy_i/dx_j" if explanation.spec.kind == "activation" else "gradient dL/dp"
    panels = ((analytic, f"analytic {what}", limit), (numeric, f"numerical {what}", limit),
              (analytic - numeric, "analytic - numeric", None))
    for ax, (values, title, vmax) in zip(axes, panels, strict=True):
        scale = vmax if vmax is not None else (float(np.nanmax(np.abs(values))) or 1.0)
        image = ax.imshow(values, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("input j")
        ax.set_ylabel("output i")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"{explanation.spec.name} ({explanation.convention})")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise UsageError(f"Cannot write the plot to '{path}': {exc.strerror}.") from exc
    finally:
        plt.close(fig)
