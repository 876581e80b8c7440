"""Schemathesis against the live server's /openapi.json: schema-valid and schema-violating requests to every
operation, none may get a 5xx.

CI runs >= 1000 cases (MUSICPROD_FUZZ_CASES sets another count), spread over the operations.
"""

from __future__ import annotations

import math
import os

import pytest
import schemathesis  # the dev extra pins it: a missing or broken install must fail, not skip
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from server.process import ServerProcess
from tests.server_helpers import make_experiment, serve_args

# The GET operations take no input (a handful of cases in all): the POST operations x 2 modes carry the count.
MIN_CASES = int(os.environ.get("MUSICPROD_FUZZ_CASES", "1000"))
EXAMPLES_PER_MODE = math.ceil(MIN_CASES / 4)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("fuzz")
    make_experiment(root, tiny_model_dir)
    args = serve_args(
        root,
        tiny_model_dir,
        "--max-new-tokens-cap",
        "4",
        "--max-body-bytes",
        "65536",
        "--merge",
        "yes",
        "--dtype",
        "float32",
    )
    with ServerProcess(args, ready_timeout_s=1200, log_path=root / "server.log") as srv:  # a busy machine: minutes
        yield srv


def test_schemathesis_no_server_errors(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/generate", "/v1/chat/completions", "/v1/models", "/metrics", "/info"}
    seen: list[tuple[str, int]] = []
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and op.method.upper() == "GET":
                continue  # nothing to violate: no parameters, no body

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_MODE,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def run(case):
                response = case.call(base_url=fuzz_server.url, timeout=30)
                seen.append((f"{op.method.upper()} {op.path} {mode.value}", response.status_code))
                assert response.status_code < 500, (case.body, response.status_code, response.text[:300])

            run()
    from collections import Counter

    print(f"\nschemathesis: {len(seen)} cases", dict(Counter(seen)))
    statuses = {s for _, s in seen}
    assert len(seen) >= MIN_CASES, f"only {len(seen)} cases ran"
    assert 200 in statuses and 400 in statuses  # both accepted and rejected inputs were exercised
