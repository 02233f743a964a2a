"""The English-retention guard: during further pretraining, protect the source language(s) by the mixture weights.

Target-only further pretraining wrecks English; a fixed mixture keeps it, but nobody says which mixture. The
guard measures, every `data.guard.every` steps, the held-out loss of each protected language (data.heldout) and
compares it with its value before the first step (the baseline, measured once, at step 0 of the run):

    rise = loss / baseline − 1          (the relative rise of nats/token = of bits/char: same text, same tokenizer)
    rise > budget        → weight × (1 + gain)          too much forgotten: more of that language
    rise < budget / 2    → weight ÷ (1 + gain / 2)      slack: give the target more
    otherwise            → unchanged

within [min_weight, max_weight] per protected language (their sum at most max_weight); the other (target)
languages share the rest in their configured proportions, and sources of one language keep their proportions.
A bang-bang controller with multiplicative steps: it settles on the smallest share of the protected language that
keeps it within budget, moving at most a factor (1 + gain) per check. Each check is logged (`guard/...` in
metrics.jsonl, TensorBoard, W&B; curves.png draws the weights); a change is also printed.

The weights live in the data mixer (data/mixture.py); they, the baseline and the count of changes are saved in each
checkpoint's meta (`Guard.state`), so a resumed run continues exactly as an uninterrupted one. Data workers
(data.worker_count > 0) would hold the mixer out of reach: refused.

    --config.data.guard.languages='["en"]' --config.data.guard.every=50 --config.data.guard.budget=0.02
"""
import math

import ml_collections

KEYS = ("languages", "every", "budget", "gain", "min_weight", "max_weight")


def default_config() -> ml_collections.ConfigDict:
    """Off (no protected languages)."""
    return ml_collections.ConfigDict(dict(languages=[], every=50, budget=0.02, gain=0.5, min_weight=0.02,
                                          max_weight=0.9))


def enabled(data_cfg) -> bool:
    guard = data_cfg.get("guard")
    return bool(guard is not None and list(guard.languages))


def check(data_cfg) -> None:
    """One-line errors, by key, before the run directory changes."""
    guard = data_cfg.get("guard")
    if guard is None:
        return
    unknown = sorted(set(guard.keys()) - set(KEYS))
    if unknown:
        raise ValueError(f"data.guard.{unknown[0]} is not a guard setting; the keys are {', '.join(KEYS)}")
    if not enabled(data_cfg):
        return
    sources = {s["lang"] for s in data_cfg.sources}
    heldout = {s["lang"] for s in data_cfg.heldout}
    for lang in guard.languages:
        if lang not in sources:
            raise ValueError(f"data.guard.languages: {lang!r} is not a language of data.sources ({sorted(sources)}); "
                             f"the guard can only raise the weight of a language it mixes in")
        if lang not in heldout:
            raise ValueError(f"data.guard.languages: {lang!r} has no held-out text in data.heldout; add one, the "
                             f"guard measures its loss there")
    if not sources - set(guard.languages):
        raise ValueError("data.guard.languages protects every language of data.sources; leave the target out")
    if data_cfg.get("worker_count", 0):
        raise ValueError("data.guard needs the mixer in the training process: set data.worker_count=0")
    if guard.every <= 0 or guard.budget <= 0 or guard.gain <= 0:
        raise ValueError(f"data.guard.every={guard.every}, budget={guard.budget}, gain={guard.gain}: all must be "
                         f"positive")
    if not 0 < guard.min_weight < guard.max_weight < 1:
        raise ValueError(f"data.guard.min_weight={guard.min_weight}, max_weight={guard.max_weight}: need "
                         f"0 < min_weight < max_weight < 1")


def next_weights(weights: dict[str, float], baseline: dict[str, float], losses: dict[str, float],
                 guard) -> dict[str, float]:
    """Language weights (summing to 1) after one check; see the module docstring."""
    new = dict(weights)
    for lang in guard.languages:
        rise = losses[lang] / baseline[lang] - 1
        if rise > guard.budget:
            new[lang] = weights[lang] * (1 + guard.gain)
        elif rise < guard.budget / 2:
            new[lang] = weights[lang] / (1 + guard.gain / 2)
        new[lang] = min(max(new[lang], guard.min_weight), guard.max_weight)
    protected = sum(new[lang] for lang in guard.languages)
    if protected > guard.max_weight:
        for lang in guard.languages:
            new[lang] *= guard.max_weight / protected
        protected = guard.max_weight
    others = [lang for lang in weights if lang not in guard.languages]
    total_others = sum(weights[lang] for lang in others)
    for lang in others:
        new[lang] = (1 - protected) * weights[lang] / total_others
    return new


class Guard:
    """The trainer's side: language weights ⇄ the mixer's source weights, the baseline, one check, and the state
    saved with each checkpoint (`state`; a resumed run passes it back as `saved`)."""

    def __init__(self, data_cfg, mixer, source_langs: list[str], saved: dict | None = None):
        if mixer is None:
            raise ValueError("data.guard: the mixer is not in this process (data.worker_count > 0)")
        self.cfg, self.mixer, self.langs = data_cfg.guard, mixer, source_langs
        self.baseline, self.changes = (saved or {}).get("baseline"), (saved or {}).get("changes", 0)
        if saved and list(saved["weights"]) != mixer.weights:  # changed after the packer's rows began: again
            mixer.set_weights(saved["weights"], normalise=False)

    def state(self) -> dict:
        return {"baseline": self.baseline, "changes": self.changes, "weights": self.mixer.weights}

    def language_weights(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for lang, w in zip(self.langs, self.mixer.weights):
            out[lang] = out.get(lang, 0.0) + w
        return out

    def set_baseline(self, losses: dict[str, float]) -> None:
        self.baseline = {lang: losses[lang] for lang in self.cfg.languages}

    def check(self, losses: dict[str, float]) -> tuple[dict, bool]:
        """Apply one check; ({guard/... record fields}, whether the weights changed)."""
        old = self.language_weights()
        new = next_weights(old, self.baseline, losses, self.cfg)
        changed = any(not math.isclose(new[lang], old[lang], rel_tol=1e-12) for lang in old)
        if changed:
            self.mixer.set_weights([w * new[lang] / old[lang] for lang, w in zip(self.langs, self.mixer.weights)])
            self.changes += 1
        record = {f"guard/weight/{lang}": w for lang, w in self.language_weights().items()}
        record.update({f"guard/rise/{lang}": losses[lang] / self.baseline[lang] - 1 for lang in self.cfg.languages})
        record["guard/changes"] = self.changes
        return record, changed
