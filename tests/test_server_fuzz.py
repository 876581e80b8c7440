"""Schemathesis against the live server's /openapi.json: schema-valid and schema-violating requests to every
operation (>= 500 cases in all), none may get a 5xx."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from server.process import ServerProcess
from tests.server_helpers import make_experiment

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.generation import GenerationMode  # noqa: E402

EXAMPLES_PER_MODE = 140  # x 2 modes x 2 POST operations + the GET operations > 500 cases


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("fuzz")
    make_experiment(root, tiny_model_dir)
    args = ["--runs-dir", str(root / "runs"), "--experiment", "fake", "--model-dir", str(tiny_model_dir),
            "--torch-threads", "1", "--max-new-tokens-cap", "16", "--max-body-bytes", "65536"]
    with ServerProcess(args, log_path=root / "server.log") as srv:
        yield srv


def test_schemathesis_no_server_errors(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/generate", "/v1/chat/completions", "/v1/models", "/metrics"}
    seen: list[tuple[str, int]] = []
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and op.method.upper() == "GET":
                continue  # nothing to violate: no parameters, no body

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                response = case.call(base_url=fuzz_server.url, timeout=30)
                seen.append((f"{op.method.upper()} {op.path} {mode.value}", response.status_code))
                assert response.status_code < 500, (case.body, response.status_code, response.text[:300])

            run()
    from collections import Counter
    print(f"\nschemathesis: {len(seen)} cases", dict(Counter(seen)))
    statuses = {s for _, s in seen}
    assert len(seen) >= 500, f"only {len(seen)} cases ran"
    assert 200 in statuses and 400 in statuses  # both accepted and rejected inputs were exercised
