"""chrF: a cheap, reference-based proxy of response quality that needs no judge model.

The paper scores responses with an LLM judge (LLM-Eval, 0-3); a toy or ≈100M model has no judge to call and
its answers are too weak for one to separate. chrF (Popović, 2015) — the F-score of character n-grams of
the response against the reference answer, recall weighted `beta` times precision — works on Chinese
without word segmentation, rewards an answer for saying what the reference says, and stays near 0 for
fluent text on another topic. Whitespace is ignored, as in the original metric. Scores are 0-100.
"""
from __future__ import annotations

from collections import Counter


def ngrams(text: str, n: int) -> Counter:
    chars = "".join(text.split())
    return Counter(chars[i:i + n] for i in range(len(chars) - n + 1))


def chrf(hypothesis: str, reference: str, max_order: int = 4, beta: float = 2.0) -> float:
    """chrF of one response: precision and recall averaged over n = 1..max_order (orders that the shorter
    text is too short for are left out), then F_beta; 0 when the response is empty."""
    precisions, recalls = [], []
    for n in range(1, max_order + 1):
        hyp, ref = ngrams(hypothesis, n), ngrams(reference, n)
        if not hyp or not ref:
            continue
        overlap = sum((hyp & ref).values())
        precisions.append(overlap / sum(hyp.values()))
        recalls.append(overlap / sum(ref.values()))
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p == 0 and r == 0:
        return 0.0
    return 100 * (1 + beta**2) * p * r / (beta**2 * p + r)
