"""musicprod harness: config, data, models, run records and the CLI."""
import os

# Every process of the harness is offline: no model/dataset hub, no telemetry.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "DEEPEVAL_TELEMETRY_OPT_OUT": "1", "TOKENIZERS_PARALLELISM": "false"}


def set_offline_env() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
