"""deepeval makes no network attempt during a judge run, and its folder lands in the chosen cache dir.

Each check runs in a fresh interpreter (deepeval's side effects happen at import) with socket.getaddrinfo and
socket.connect wrapped: any non-loopback lookup or connection is recorded and refused. A control run imports deepeval
with only the harness' generic DEEPEVAL_TELEMETRY_OPT_OUT=1 and shows the guard catches deepeval's telemetry
(deepeval 2.9.3 opts out only on the literal "YES").
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GUARD = r"""
import ipaddress, json, socket, sys
attempts = []
def _loopback(host):
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("localhost", "") or host is None:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
_gai = socket.getaddrinfo
def guarded_getaddrinfo(host, *a, **k):
    if host is not None and not _loopback(host):
        attempts.append(["dns", str(host)])
        raise socket.gaierror(socket.EAI_NONAME, "blocked by test guard")
    return _gai(host, *a, **k)
socket.getaddrinfo = guarded_getaddrinfo
for name in ("connect", "connect_ex"):
    original = getattr(socket.socket, name)
    def guarded(self, address, _original=original, _name=name):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            attempts.append([_name, str(address[0])])
            raise OSError("blocked by test guard")
        return _original(self, address)
    setattr(socket.socket, name, guarded)
import atexit
atexit.register(lambda: print("ATTEMPTS=" + json.dumps(attempts), flush=True))
"""

JUDGE_RUN = (
    GUARD
    + r"""
from harness.judge.rubrics import make_judge, rubric_metrics, score_answer
from harness.judge.config import load_judge_settings
model_dir, cache_dir = sys.argv[1], sys.argv[2]
judge = make_judge(load_judge_settings(None, [f"model={model_dir}", "reason_tokens=2"]), cache_dir)
scores = score_answer(rubric_metrics(judge), judge, "What does a high-pass filter do?", "It cuts lows.",
                      "It removes content below the cutoff frequency.", [{"fact": "removes lows"}])
print("SCORES=" + json.dumps({d: scores[d] for d in ("correctness", "relevance", "helpfulness")}), flush=True)
"""
)

CONTROL = (
    GUARD
    + r"""
import deepeval
"""
)


def _run(code: str, args: list[str], cwd: Path, env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPEVAL")}
    env.update({"PYTHONPATH": str(REPO), **env_extra})
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {
        line.split("=", 1)[0]: json.loads(line.split("=", 1)[1])
        for line in proc.stdout.splitlines()
        if line.startswith(("ATTEMPTS=", "SCORES="))
    }
    return lines


def test_judge_run_makes_no_network_attempt(tiny_model_dir, tmp_path):
    cwd, cache = tmp_path / "cwd", tmp_path / "exp" / "judge" / ".deepeval-cache"
    cwd.mkdir()
    (cwd / ".env").write_text("OPENAI_API_KEY=sk-should-never-be-read\nDEEPEVAL_TELEMETRY_OPT_OUT=NO\n")
    out = _run(
        JUDGE_RUN, [str(tiny_model_dir), str(cache)], cwd, {"HF_HUB_OFFLINE": "1", "DEEPEVAL_TELEMETRY_OPT_OUT": "1"}
    )
    assert out["ATTEMPTS"] == []
    assert all(1 <= v <= 5 for v in out["SCORES"].values())
    assert (cache / ".deepeval").is_dir()  # deepeval's folder went to the cache dir ...
    assert not (cwd / ".deepeval").exists()  # ... not to the working directory


def test_guard_catches_deepeval_telemetry_when_opt_out_is_not_yes(tmp_path):
    out = _run(CONTROL, [], tmp_path, {"DEEPEVAL_TELEMETRY_OPT_OUT": "1"})
    assert any(host == "api.ipify.org" for _, host in out["ATTEMPTS"]), out
