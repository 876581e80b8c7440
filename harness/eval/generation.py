"""Greedy batch decoding that drops finished rows, for held-out evaluation.

Hand-written because transformers' `generate` keeps every row of a batch (and its KV cache) computing until
the last row finishes, and lm-eval batches QA items whose answers end anywhere between a few and 256 tokens:
on the default experiment 11-17 % of the decode row-steps were spent on rows that had already stopped. Here a
row leaves the batch and the cache at its stop token. The server's engine does the same per request, with
sampling and streaming on top.
"""

from __future__ import annotations

import torch


def penalize_repeats(
    logits: torch.Tensor, answers: torch.Tensor, repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0
) -> torch.Tensor:
    """Repetition control over the answer so far: transformers' own logits processors, applied to the generated
    tokens only ([B, n]), not to the prompt, so a row's penalties never depend on its left padding or on which
    rows share its batch. The evaluation and the server both decode through this, so what is served is what
    was measured."""
    if answers.shape[1] == 0 or (repetition_penalty == 1.0 and not no_repeat_ngram_size):
        return logits
    from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    if repetition_penalty != 1.0:
        logits = RepetitionPenaltyLogitsProcessor(repetition_penalty)(answers, logits)
    if no_repeat_ngram_size:
        logits = NoRepeatNGramLogitsProcessor(no_repeat_ngram_size)(answers, logits)
    return logits


def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Left-padded prompts [B, T] through the model into a fresh KV cache -> (cache, last logits [B, V], next
    positions [B, 1]). Positions count real tokens only, so a row's padding never shifts its rotary positions."""
    from transformers import DynamicCache

    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1, :]
    return cache, logits, positions[:, -1:] + 1


def greedy_generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    stop_ids: set[int],
    fill_id: int,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> torch.Tensor:
    """Left-padded prompts [B, T] -> [B, T + max_new_tokens]: prompt, greedy tokens up to and including a stop
    token, then fill_id. Same tokens as `model.generate(do_sample=False)` with those stop tokens as eos (and,
    with repetition control, the same processors applied to the answer tokens: `penalize_repeats`)."""
    batch, width = input_ids.shape
    out = torch.full((batch, width + max_new_tokens), fill_id, dtype=input_ids.dtype, device=input_ids.device)
    out[:, :width] = input_ids
    if max_new_tokens <= 0:
        return out
    stops = torch.tensor(sorted(stop_ids), device=input_ids.device)
    rows = torch.arange(batch, device=input_ids.device)  # which output row each live batch row is
    mask = attention_mask
    with torch.inference_mode():
        cache, logits, next_pos = prefill(model, input_ids, mask)
        for step in range(max_new_tokens):
            answers = out[rows, width : width + step]
            tokens = penalize_repeats(logits.float(), answers, repetition_penalty, no_repeat_ngram_size).argmax(-1)
            out[rows, width + step] = tokens
            live = ~torch.isin(tokens, stops)
            if step == max_new_tokens - 1 or not live.any():
                break
            if not live.all():  # finished rows leave the batch and the KV cache
                keep = live.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                rows, tokens, mask, next_pos = rows[keep], tokens[keep], mask[keep], next_pos[keep]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            logits = model(
                input_ids=tokens.unsqueeze(1),
                attention_mask=mask,
                position_ids=next_pos,
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1, :]
            next_pos = next_pos + 1
    return out
