"""The OpenAI-compatible judge backend against a real HTTP server on 127.0.0.1 (no mocked HTTP layer): a small
http.server speaking POST /v1/chat/completions, backed by the tiny random HF model through harness.judge.hf_engine
(honouring response_format json_schema and logprobs as vLLM / llama.cpp / Ollama do)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.judge.config import load_judge_settings

BENCH_QA = json.loads(open("benchmarks/musicprod/data/qa.json", encoding="utf-8").read())


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, engine, with_logprobs: bool):
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.engine, self.with_logprobs, self.requests, self.lock = engine, with_logprobs, [], threading.Lock()


class ChatHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
        fmt = body.get("response_format") or {}
        schema = fmt.get("json_schema", {}).get("schema") if fmt.get("type") == "json_schema" else None
        want = bool(body.get("logprobs")) and self.server.with_logprobs
        with self.server.lock:  # one forward at a time through the shared model
            result = self.server.engine.complete(
                body["messages"],
                schema=schema,
                max_tokens=body.get("max_tokens", 32),
                logprobs=want,
                top_logprobs=body.get("top_logprobs") or 1,
            )
        result["model"] = body["model"]
        self._send(200, result)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from harness.judge.hf_engine import HFChatEngine

    return HFChatEngine(tiny_model_dir)


def _serve(engine, with_logprobs=True):
    server = ChatServer(engine, with_logprobs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def _score(judge, answer):
    from harness.judge.rubrics import rubric_metrics, score_answer

    item = BENCH_QA[1]
    return score_answer(rubric_metrics(judge), judge, item["question"], answer, item["reference"], item["key_facts"])


def test_openai_backend_over_real_http_matches_local_backend(engine, tiny_model_dir, tmp_path, monkeypatch):
    from harness.judge.rubrics import make_judge, pairwise_verdict

    server = _serve(engine)
    try:
        monkeypatch.setenv("MUSICPROD_TEST_JUDGE_KEY", "sk-local-test")
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        remote = make_judge(
            load_judge_settings(
                None,
                [
                    "backend=openai",
                    f"base_url={url}",
                    "model=tiny-judge",
                    "api_key_env=MUSICPROD_TEST_JUDGE_KEY",
                    "reason_tokens=4",
                ],
            ),
            tmp_path,
        )
        over_http = _score(remote, "Cut the lows with a high-pass filter around 100 Hz.")
        local = make_judge(load_judge_settings(None, [f"model={tiny_model_dir}", "reason_tokens=4"]), tmp_path)
        direct = _score(local, "Cut the lows with a high-pass filter around 100 Hz.")
        verdict = pairwise_verdict(remote, BENCH_QA[1], "answer one", "answer two")
    finally:
        server.shutdown()
    for d in ("correctness", "relevance", "helpfulness"):
        assert over_http[d] == pytest.approx(direct[d], abs=1e-6)  # the same model: HTTP changes nothing
        assert over_http["weighted"][d] is True and not float(over_http[d]).is_integer()
    assert verdict in ("A", "B", "tie")
    first = server.requests[0]
    assert first["authorization"] == "Bearer sk-local-test"
    assert first["body"]["logprobs"] is True and first["body"]["top_logprobs"] == 5
    assert first["body"]["response_format"]["json_schema"]["schema"]["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    assert first["body"]["model"] == "tiny-judge" and first["body"]["temperature"] == 0.0
    assert len(server.requests) == 4  # three rubric metrics + one pairwise verdict


def test_endpoint_without_logprobs_falls_back_to_integer_scores(engine, tmp_path):
    from harness.judge.rubrics import make_judge

    server = _serve(engine, with_logprobs=False)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        judge = make_judge(
            load_judge_settings(None, ["backend=openai", f"base_url={url}", "model=m", "reason_tokens=2"]), tmp_path
        )
        with pytest.warns(UserWarning, match="no logprobs"):
            scores = _score(judge, "Some answer.")
    finally:
        server.shutdown()
    for d in ("correctness", "relevance", "helpfulness"):
        assert float(scores[d]).is_integer() and 1 <= scores[d] <= 5
        assert scores["weighted"][d] is False


def test_logprobs_off_uses_schema_constrained_output(engine, tmp_path):
    from harness.judge.rubrics import make_judge

    server = _serve(engine)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        judge = make_judge(
            load_judge_settings(
                None, ["backend=openai", f"base_url={url}", "model=m", "logprobs=false", "reason_tokens=2"]
            ),
            tmp_path,
        )
        scores = _score(judge, "Some answer.")
    finally:
        server.shutdown()
    assert all(float(scores[d]).is_integer() for d in ("correctness", "relevance", "helpfulness"))
    bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 3 and not any(b.get("logprobs") for b in bodies)
    assert all(
        b["response_format"]["json_schema"]["schema"]["properties"]["score"]["enum"] == [1, 2, 3, 4, 5] for b in bodies
    )


class ScriptedJudge:
    """A judge behind the same HTTP server with a known verdict: it scores 5 when the answer it reads is the
    item's own reference and 1 when it is another item's (an off-topic answer), or the reverse. What a judge
    says is then known, so the reliability verdict can be checked rather than re-derived."""

    def __init__(self, references: list[str], reference_scores: int, off_topic_scores: int):
        self.references = references
        self.reference_scores, self.off_topic_scores = reference_scores, off_topic_scores

    def _score(self, text: str) -> int:
        found = {r for r in self.references if r in text}
        if len(found) >= 2:  # the expected output and a different item's reference as the actual output
            return self.off_topic_scores
        return self.reference_scores if found else 3

    def complete(self, messages, schema=None, max_tokens=32, logprobs=True, top_logprobs=1) -> dict:
        props = (schema or {}).get("properties", {})
        score = self._score(messages[-1]["content"])
        if "verdict" in props:
            content = json.dumps({"verdict": "tie"})
        elif "steps" in props:
            content = json.dumps({"steps": ["Compare the answer with the reference answer."]})
        else:
            content = json.dumps({"score": score, "reason": "scripted"})
        pieces = [content[: content.index(str(score)) if '"score"' in content else len(content)]]
        if '"score"' in content:
            pieces += [str(score), content[len(pieces[0]) + 1 :]]
        entries = [
            {
                "token": p,
                "logprob": 0.0,
                "bytes": list(p.encode()),
                "top_logprobs": [{"token": p, "logprob": 0.0, "bytes": list(p.encode())}],
            }
            for p in pieces
            if p
        ]
        return {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": 0,
            "model": "scripted",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                    "logprobs": {"content": entries} if logprobs else None,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": len(entries), "total_tokens": 1 + len(entries)},
        }


@pytest.mark.parametrize(
    "reference_scores, off_topic_scores, reliable", [(5, 1, True), (1, 5, False)], ids=["prefers-reference", "reversed"]
)
def test_reliability_verdict_follows_what_the_judge_says(tmp_path, reference_scores, off_topic_scores, reliable):
    from harness.judge.run import run_judge
    from tests.test_judge import _fixture_experiment

    exp = _fixture_experiment(tmp_path / "exp", BENCH_QA[:3])
    server = _serve(ScriptedJudge([q["reference"] for q in BENCH_QA], reference_scores, off_topic_scores))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        settings = load_judge_settings(
            None,
            [
                "backend=openai",
                f"base_url={url}",
                "model=scripted",
                "name=scripted",
                "max_items=3",
                "sanity_items=10",
                "repeats=1",
                "reason_tokens=4",
            ],
        )
        summary = run_judge(exp, settings)
    finally:
        server.shutdown()
    rel = summary["reliability"]
    assert rel["sanity_n"] == 10
    assert rel["sanity_pass_rate"] == (1.0 if reliable else 0.0)
    assert summary["reliable"] is reliable and summary["use_for_champion"] is reliable
