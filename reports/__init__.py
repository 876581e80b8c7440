"""HTML/Markdown/JSON report of one experiment and the champion rule (the server loads the champion).

build_report(experiment_dir, out_root="reports/out") -> Path of index.html
choose_champion(experiment_dir) -> dict, also written to runs/<experiment>/champion.json
"""

from reports.build import build_report
from reports.champion import choose_champion

__all__ = ["build_report", "choose_champion"]
