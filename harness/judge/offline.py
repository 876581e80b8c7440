"""Import deepeval with no network and no files outside the chosen folder.

deepeval 2.9.3 at import time: opts out of telemetry only when DEEPEVAL_TELEMETRY_OPT_OUT == "YES" (the harness'
generic "1" is NOT enough: with it, the import asks api.ipify.org for the public IP and starts Sentry, PostHog and
an OTLP exporter); checks PyPI for updates when DEEPEVAL_UPDATE_WARNING_OPT_IN == "YES"; and creates `.deepeval/`
in the *current directory*. It does not read `.env` files (newer releases do unless DEEPEVAL_DISABLE_DOTENV=1,
set here too). So: force the opt-out values, and import with the cwd switched to `cache_dir` once.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

DEEPEVAL_ENV = {
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "DEEPEVAL_UPDATE_WARNING_OPT_IN": "NO",
    "DEEPEVAL_DISABLE_DOTENV": "1",
    "ERROR_REPORTING": "NO",
    "TELEMETRY_OPT_OUT": "YES",
}
_lock = threading.Lock()


def offline_deepeval_env() -> None:
    """Force (not setdefault) the values deepeval checks literally."""
    from harness import set_offline_env

    set_offline_env()
    os.environ.update(DEEPEVAL_ENV)


def import_deepeval(cache_dir: str | Path | None = None):
    """Import deepeval offline; its `.deepeval/` folder goes to `cache_dir` (only the first import decides)."""
    offline_deepeval_env()
    if "deepeval" in sys.modules:
        return sys.modules["deepeval"]
    with _lock:
        if cache_dir is None:
            import deepeval

            return deepeval
        cache = Path(cache_dir).expanduser().resolve()
        cache.mkdir(parents=True, exist_ok=True)
        old = os.getcwd()
        os.chdir(cache)  # deepeval.telemetry runs os.makedirs(".deepeval") relative to the cwd at import
        try:
            import deepeval
            import deepeval.metrics  # noqa: F401  (pulls in the rest of the import-time side effects here)
        finally:
            os.chdir(old)
        return deepeval
