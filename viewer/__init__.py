"""Offline re-credit and the per-token credit viewer (docs/viewer.md): the top layer above credit and agents.

    from creditgym.viewer import recredit, read_episodes, view, write_report
    credited = recredit(read_episodes("runs/quickstart"), "gigpo", gamma=0.95)
    view(credited, compare="grpo")                   # inline in Jupyter
    write_report("runs/quickstart", "report.html")   # one self-contained HTML file

Nothing in the library imports this package; the CLI (`creditgym recredit`, `creditgym view`) does.
"""

from creditgym.viewer.recredit import load_estimator, read_episodes, recredit
from creditgym.viewer.report import Report, build_report, view, write_report

__all__ = ["Report", "build_report", "load_estimator", "read_episodes", "recredit", "view", "write_report"]
