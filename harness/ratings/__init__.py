"""Human ratings: the rating queue, a durable SQLite store, CSV import/export, and the statistics.

Store: runs/<experiment>/ratings.sqlite in WAL mode with synchronous=FULL; every rating is one transaction that
is committed before the web UI is told "saved", so a confirmed rating survives a killed server (and a power cut).
Each call opens its own connection, so several raters (threads or processes) can write at once; SQLite
serialises the writers and `busy_timeout` makes them wait instead of failing.

Blindness: inside the store an answer is identified by `uid`, a hash of target, item and answer text (so lm-eval
and CSV imports can find it); anyone who sees the answer text can compute that hash, so it never leaves the
server. A rater only sees `blind_id`, drawn at random when the answer is queued, and everything the browser gets
(queue order, pair ids, which answer is shown as A) derives from blind ids alone. An answer regenerated with
different text gets a new uid, so old ratings never count for a new answer: statistics use the *current* answer
per (target, item), the one most recently queued.

Raters: `issue_token` gives each rater a random token for their personal link; the store keeps only its SHA-256.

Statistics (summarize): per target and dimension the mean over answers (each answer's ratings averaged first) with
a 95 % bootstrap CI (harness.eval.stats), Krippendorff's ordinal alpha per dimension (the `krippendorff` package),
Spearman between the human mean and an LLM judge's score per answer, coverage, and pairwise win/tie/loss counts.
"""

from harness.layout import generation_files
from harness.ratings.csv_io import export_csv, export_template, import_csv
from harness.ratings.queue import read_generations, sync_queue
from harness.ratings.stats import (
    format_summary,
    human_scores,
    krippendorff_alpha,
    pairwise_counts,
    read_judge_scores,
    summarize,
)
from harness.ratings.store import (
    BLOCK_SIZE,
    DIMENSIONS,
    PAIR_CHOICES,
    RUBRIC,
    SCORES,
    RatingError,
    RatingStore,
    a_is_first,
    answer_uid,
    check_comment,
    check_rater,
    check_score,
    pair_id,
    pair_key,
    rater_order,
)

__all__ = [
    "BLOCK_SIZE",
    "DIMENSIONS",
    "PAIR_CHOICES",
    "RUBRIC",
    "SCORES",
    "RatingError",
    "RatingStore",
    "a_is_first",
    "answer_uid",
    "check_comment",
    "check_rater",
    "check_score",
    "export_csv",
    "export_template",
    "format_summary",
    "generation_files",
    "human_scores",
    "import_csv",
    "krippendorff_alpha",
    "pair_id",
    "pair_key",
    "pairwise_counts",
    "rater_order",
    "read_generations",
    "read_judge_scores",
    "summarize",
    "sync_queue",
]
