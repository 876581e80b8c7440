"""musicprod harness: config, data, models, run records and the CLI."""

import os

# Every process of the harness is offline: no model/dataset hub, no telemetry.
# deepeval 2.9.3 opts out of telemetry only when DEEPEVAL_TELEMETRY_OPT_OUT is exactly "YES" ("1" still phones home).
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "TOKENIZERS_PARALLELISM": "false",
}
FORCED = ("DEEPEVAL_TELEMETRY_OPT_OUT",)  # a user's "1" here would not opt out, so ours wins


def set_offline_env() -> None:
    for key, value in OFFLINE_ENV.items():
        if key in FORCED:
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)
