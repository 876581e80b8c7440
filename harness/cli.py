"""`musicprod` command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness import set_offline_env
from harness.config import ConfigError, describe, experiment_config, load_config, split_config_args, to_dict
from harness.data.load import DatasetError
from harness.layout import resolve_experiment
from harness.models import ModelError


def cmd_run(ns) -> int:
    from harness.pipeline import run_experiment
    config_path, overrides = split_config_args(ns.args)
    cfg = load_config(config_path, overrides)
    summary = run_experiment(cfg, config_path, overrides)
    print("\n=== summary ===")
    for system, s in summary["systems"].items():
        extra = s.get("reason") or f"{s.get('train_tokens_per_s')} tok/s, val loss {s.get('validation_loss')}"
        print(f"  {system:14s} {s['status']:8s} {extra}")
    print(f"champion: {summary.get('champion')}  report: {summary.get('report')}")
    print(f"results: {cfg.experiment_dir}/  ({summary['stages']['total_s']:.0f} s)")
    return 0 if all(s["status"] in ("ok", "skipped") for s in summary["systems"].values()) else 1


def distributed_overrides(ns) -> list[str]:
    """`--launcher/--num-processes/--accelerate-config` are the distributed.* keys (the same as in a YAML)."""
    flags = {"launcher": ns.launcher, "num_processes": ns.num_processes, "accelerate_config": ns.accelerate_config}
    return [f"distributed.{key}={value}" for key, value in flags.items() if value is not None] + \
        (["train.resume=true"] if getattr(ns, "resume", False) else [])


def cmd_train(ns) -> int:
    from harness.pipeline import check_and_prepare, train_system
    config_path, overrides = split_config_args(ns.args)
    overrides += distributed_overrides(ns)
    cfg = load_config(config_path, overrides)
    model = check_and_prepare(cfg)
    record = train_system(cfg, config_path, overrides, ns.system, model)
    print(json.dumps({k: record.get(k) for k in ("system", "status", "reason", "train_tokens_per_s", "validation_loss")}))
    return 0 if record["status"] in ("ok", "skipped") else 1


def cmd_model(ns) -> int:
    from harness.registry import BASE_MODELS
    if ns.action == "list":
        for m in BASE_MODELS:
            print(f"{m.name:24s} {m.description}")
        return 0
    from harness.models import prepare
    cache = ns.cache_dir or load_config().model.cache_dir
    resolved = prepare(ns.name, cache)
    print(resolved.path)
    return 0


def cmd_config(ns) -> int:
    if ns.action == "keys":
        for key, default, help_text in describe():
            print(f"{key:32s} {default:28s} {help_text}")
        return 0
    config_path, overrides = split_config_args(ns.args)
    print(json.dumps(to_dict(load_config(config_path, overrides)), indent=2))
    return 0


def cmd_data(ns) -> int:
    from harness.data.check import run_check
    return run_check(ns.train, ns.benchmark_dir, semantic=not ns.no_semantic, augmented_path=ns.augmented or None,
                     dev_dir=ns.dev_dir or None)


def cmd_eval(ns) -> int:
    from harness.eval.run import EvalError, format_summary, run_eval
    from harness.layout import eval_dir
    experiment_dir = resolve_experiment(ns.experiment)
    cfg = experiment_config(experiment_dir, ns.overrides + ([f"eval.split={ns.split}"] if ns.split else []))
    try:
        summary = run_eval(experiment_dir, cfg.eval, only=ns.only.split(",") if ns.only else None)
    except EvalError as e:
        print(f"musicprod eval: error: {e}", file=sys.stderr)
        return 2
    print(f"\n=== {cfg.eval.split} evaluation (95 % bootstrap CIs) ===")
    print(format_summary(summary))
    print(f"results: {eval_dir(experiment_dir, cfg.eval.split)}/  ({summary['wall_s']:.0f} s)")
    return 0


def cmd_judge(ns) -> int:
    from harness.judge.inputs import JudgeError
    from harness.judge.run import format_summary, run_judge
    from harness.judge.config import describe_judge, load_judge_settings
    if ns.keys:
        for key, default, help_text in describe_judge():
            print(f"{key:18s} {default:28s} {help_text}")
        return 0
    args = list(ns.args)
    config_path = args.pop(0) if args and "=" not in args[0] else None
    settings = load_judge_settings(config_path, args)
    experiment_dir = resolve_experiment(ns.experiment)
    try:
        summary = run_judge(experiment_dir, settings)
    except JudgeError as e:
        print(f"musicprod judge: error: {e}", file=sys.stderr)
        return 2
    print("\n=== LLM judge (G-Eval, 1-5; 95 % bootstrap CIs) ===")
    print(format_summary(summary))
    print(f"results: {experiment_dir}/judge/{summary['judge']}/  ({summary['wall_s']:.0f} s)")
    return 0


BENCH_USAGE = {
    "train": "musicprod bench train [CONFIG.yaml] [key=value ...]: hf-lora and hf-qlora, 12 steps, tokens/s and memory",
    "eval": "musicprod bench eval [EXPERIMENT] [SYSTEM] [eval.key=value ...]: full held-out, merged vs attached adapter",
    "recipe": "musicprod bench recipe [CONFIG.yaml] name=NAME systems=[SYSTEM] [key=value ...] [--checkpoints K]: train "
              "with K checkpoints, evaluate each on the dev set, append rows to benchmarks/results/recipe/sweep.jsonl",
}


def cmd_bench(ns) -> int:
    from harness import bench
    if ns.what in BENCH_USAGE and any(a in ("-h", "--help") for a in ns.args):
        print(BENCH_USAGE[ns.what])  # serve and gpu parse their own options (and --help)
        return 0
    if ns.what == "serve":  # the server is downstream of the harness: only the command line reaches it
        from server.bench import main as bench_serve
        return bench_serve(ns.args)
    return bench.main(ns.what, ns.args)


def cmd_serve(ns) -> int:
    from server.main import serve
    return serve(ns)


def cmd_export(ns) -> int:
    from export import ExportError, run_export
    experiment_dir = resolve_experiment(ns.experiment)
    try:
        manifest = run_export(experiment_dir, ns.system, ns.format, ns.out, ns.converter, ns.dtype)
    except ExportError as e:
        print(f"musicprod export: error: {e}", file=sys.stderr)
        return 2
    for name, entry in manifest["files"].items():
        if name.endswith((".gguf", ".safetensors", "Modelfile", "README.md")):
            print(f"  {name:48s} {entry['bytes'] / 2**20:9.1f} MiB  sha256 {entry['sha256'][:16]}")
    return 0


def cmd_rate(ns) -> int:
    from harness import ratings
    experiment_dir = resolve_experiment(ns.experiment)
    store = ratings.RatingStore.for_experiment(experiment_dir)
    raters = [name for name in (ns.raters or "").split(",") if name.strip()]
    try:
        ratings.sync_queue(experiment_dir, store)
        tokens = {name: store.issue_token(name, ns.reissue) for name in raters}
        if ns.import_csv:
            print(json.dumps(ratings.import_csv(store, ns.import_csv)))
        if ns.export:
            n = ratings.export_csv(store, ns.export, kind="pairwise" if ns.pairwise else "single")
            print(f"wrote {n} rows to {ns.export}")
        if ns.template:
            n = ratings.export_template(store, ns.template, ns.rater or "")
            print(f"wrote a blind sheet of {n} answers for {ns.rater} to {ns.template}")
        if ns.stats:
            summary = ratings.summarize(experiment_dir)
            print(json.dumps(summary, indent=2, ensure_ascii=False) if ns.json else ratings.format_summary(summary))
    except ratings.RatingError as e:
        print(f"musicprod rate: error: {e}", file=sys.stderr)
        return 2
    if ns.import_csv or ns.export or ns.template or ns.stats:
        return 0
    if not store.raters():
        print("musicprod rate: error: no raters yet; name them with --raters NAME,NAME (each gets a personal link)",
              file=sys.stderr)
        return 2
    from server.rating import serve
    return serve(experiment_dir, ns.host, ns.port, tokens=tokens, extra_hosts=ns.allowed_host)


def cmd_report(ns) -> int:
    from reports import build_report, choose_champion
    from reports.load import ReportError
    if ns.gpu is not None:
        return _gpu_report(ns)
    experiment_dir = resolve_experiment(ns.experiment)
    try:
        champion = choose_champion(experiment_dir)
        index = build_report(experiment_dir, ns.out)
    except ReportError as e:
        print(f"musicprod report: error: {e}", file=sys.stderr)
        return 2
    print(f"champion: {champion['system']}  ({experiment_dir / 'champion.json'})")
    print(f"report:   {index}  (+ summary.md, summary.json)")
    return 0


def _gpu_report(ns) -> int:
    from reports.gpu import build_gpu_report, find_result_dirs
    from reports.load import ReportError
    dirs = [Path(d) for d in ns.gpu] or find_result_dirs()
    try:
        index = build_gpu_report(dirs, ns.out)
    except ReportError as e:
        print(f"musicprod report --gpu: error: {e}", file=sys.stderr)
        return 2
    print(f"GPU report: {index}  (+ summary.json; from {len(dirs)} result folder(s))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musicprod", description="Fine-tune, evaluate and serve music-production LMs.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="main job: prepare -> train every system -> evaluate -> report")
    r.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    r.set_defaults(func=cmd_run)
    t = sub.add_parser("train", help="train one system in its own process")
    t.add_argument("system")
    t.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    t.add_argument("--launcher", choices=["python", "accelerate"], help="= distributed.launcher (default python)")
    t.add_argument("--num-processes", type=int, metavar="N", help="= distributed.num_processes: DDP/FSDP ranks")
    t.add_argument("--accelerate-config", metavar="YAML",
                   help="= distributed.accelerate_config (default auto; configs/accelerate/fsdp.yaml for FSDP)")
    t.add_argument("--resume", action="store_true", help="= train.resume=true: continue from the newest checkpoint")
    t.set_defaults(func=cmd_train)
    m = sub.add_parser("model", help="base models: list | prepare NAME")
    m.add_argument("action", choices=["list", "prepare"])
    m.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    m.add_argument("--cache-dir", default=None, help="default ~/.cache/musicprod/models (or $MUSICPROD_MODEL_CACHE)")
    m.set_defaults(func=cmd_model)
    c = sub.add_parser("config", help="show | keys: the effective config, or every key with its help")
    c.add_argument("action", choices=["show", "keys"])
    c.add_argument("args", nargs="*")
    c.set_defaults(func=cmd_config)
    d = sub.add_parser("data", help="check: validate training set and held-out benchmark")
    d.add_argument("action", choices=["check"])
    d.add_argument("--train", default="data/music_production_dataset.json")
    d.add_argument("--benchmark-dir", default="benchmarks/musicprod/data")
    d.add_argument("--augmented", default="data/music_production_augmented.json",
                   help="paraphrase augmentations of the training set ('' = none)")
    d.add_argument("--dev-dir", default="benchmarks/musicprod/data/dev", help="dev set (qa.json, mc.json; '' = none)")
    d.add_argument("--no-semantic", action="store_true", help="skip the MiniLM near-duplicate checks")
    d.set_defaults(func=cmd_data)
    e = sub.add_parser("eval", help="evaluate the base model and every adapter of an experiment (lm-eval)")
    e.add_argument("experiment", nargs="?", default="default", help="name under runs/ or a path (default: default)")
    e.add_argument("overrides", nargs="*", help="key=value, e.g. eval.limit=20 eval.batch_size=8")
    e.add_argument("--only", default=None, help="comma-separated targets to (re)evaluate, e.g. base,hf-lora,lookup; "
                                               "SYSTEM@STEP evaluates a saved checkpoint (train.save_steps)")
    e.add_argument("--split", choices=["heldout", "dev"], default=None,
                   help="question set (= eval.split): dev to choose recipes and checkpoints, heldout once at the end")
    e.set_defaults(func=cmd_eval)
    j = sub.add_parser("judge", help="LLM judge: G-Eval rubric scores, pairwise, reliability of saved generations")
    j.add_argument("experiment", nargs="?", default="default", help="name under runs/ or a path (default: default)")
    j.add_argument("args", nargs="*", help="[JUDGE.yaml] [key=value ...], e.g. backend=openai model=qwen2.5:7b max_items=20")
    j.add_argument("--keys", action="store_true", help="list every judge setting with its default and help, then exit")
    j.set_defaults(func=cmd_judge)
    b = sub.add_parser("bench", help="benchmarks that print figures: train | eval | serve | gpu")
    b.add_argument("what", choices=["train", "eval", "recipe", "serve", "gpu"])
    b.add_argument("args", nargs=argparse.REMAINDER,
                   help="train: [CONFIG.yaml] [key=value ...]; eval: [EXPERIMENT] [SYSTEM] [key=value ...]; "
                        "serve, gpu: see `musicprod bench serve --help`, `musicprod bench gpu --help`")
    b.set_defaults(func=cmd_bench)
    s = sub.add_parser("serve", help="serve the champion over HTTP (/generate, OpenAI /v1/chat/completions)")
    from server.main import add_arguments as add_serve_arguments
    add_serve_arguments(s)
    s.set_defaults(func=cmd_serve)
    x = sub.add_parser("export", help="ship a system (default: the champion): merged folder, GGUF, Ollama Modelfile")
    x.add_argument("experiment", nargs="?", default="default", help="name under runs/ or a path (default: default)")
    x.add_argument("--system", default=None, help="a trained system or 'base' (default: the champion)")
    x.add_argument("--format", action="append", default=None, metavar="merged|gguf|ollama",
                   help="repeatable or comma-separated (default: all three; ollama includes the gguf)")
    x.add_argument("--out", default=None, help="default runs/<experiment>/export/<system>/")
    x.add_argument("--converter", default=None, help="llama.cpp's convert_hf_to_gguf.py (offline; default: fetched "
                                                     "once from the pinned llama-cpp-python sdist)")
    x.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="merged weights (auto: the base checkpoint's dtype)")
    x.set_defaults(func=cmd_export)
    h = sub.add_parser("rate", help="human ratings: serve the blind rating UI, or --stats/--export/--import")
    h.add_argument("experiment", nargs="?", default="default", help="name under runs/ or a path (default: default)")
    h.add_argument("--host", default="127.0.0.1",
                   help="bind address (default: localhost only; 0.0.0.0 for raters on other machines, plain HTTP)")
    h.add_argument("--port", type=int, default=8765)
    h.add_argument("--raters", metavar="NAME,NAME", help="issue a personal link (random token) to each new rater; "
                                                        "printed at start-up, only its hash is stored")
    h.add_argument("--reissue", action="store_true",
                   help="with --raters: replace their links (the old ones stop working)")
    h.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name raters reach the UI by, besides localhost and --host (repeatable)")
    h.add_argument("--stats", action="store_true", help="print means with 95%% CIs, alpha, coverage; then exit")
    h.add_argument("--json", action="store_true", help="with --stats: the summarize() dict as JSON")
    h.add_argument("--export", metavar="CSV", help="write all ratings to CSV (with --pairwise: the A/B judgements)")
    h.add_argument("--pairwise", action="store_true")
    h.add_argument("--import", dest="import_csv", metavar="CSV", help="import ratings from a CSV (spreadsheet)")
    h.add_argument("--template", metavar="CSV", help="write a blind sheet for --rater to fill in a spreadsheet")
    h.add_argument("--rater", help="with --template: the rater's name")
    h.set_defaults(func=cmd_rate)
    rp = sub.add_parser("report", help="HTML report (index.html, summary.md, summary.json) and champion.json")
    rp.add_argument("experiment", nargs="?", default="default", help="name under runs/ or a path (default: default)")
    rp.add_argument("--out", default="reports/out", help="reports root; writes OUT/<experiment>/ (default: reports/out)")
    rp.add_argument("--gpu", nargs="*", metavar="RESULTS_DIR", default=None,
                    help="instead of an experiment: the Unsloth vs HF GPU report from `bench gpu` result folders "
                         "(default: every folder under benchmarks/results/gpu/); writes OUT/gpu/")
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    set_offline_env()
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    # argparse ends a positional list at the first option, so `eval exp --only base k=v` would leave `k=v` over
    # (parse_intermixed_args does not support subparsers): put such key=value words back where they belong.
    trailing = "overrides" if hasattr(ns, "overrides") else "args" if isinstance(getattr(ns, "args", None), list) else None
    if extra and trailing and all("=" in a and not a.startswith("-") for a in extra):
        getattr(ns, trailing).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return ns.func(ns)
    except (ConfigError, DatasetError, ModelError) as e:
        print(f"musicprod: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
