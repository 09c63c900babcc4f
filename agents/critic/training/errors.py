"""Planted errors: the unsupported claims of the labelled set, and the critic probes of
``scriptorium eval``.

A swapped number, name or content word, a flipped polarity, an unsupported clause added.
"""

from __future__ import annotations

import random
import re

from agents.common.grounding.text import RARE, TermStats, analyse, lemma
from agents.critic.training.wording import AUX, CUT_WORDS, articles, body, find_names, finish, plain

NEGATIVE_KINDS = (
    "other_random",
    "other_hard",
    "wrong_citation",
    "swapped_number",
    "swapped_entity",
    "swapped_term",
    "negated",
    "extra_clause",
)


class Planter:
    """Seeded planted errors; ``stats`` (optional) keeps swapped-in words rare."""

    def __init__(self, rng: random.Random, stats: TermStats | None = None) -> None:
        self.rng = rng
        self.stats = stats

    def swap_number(self, claim: str, passage: str) -> str | None:
        """``claim`` with one number changed to one the passage does not hold."""
        have = analyse(passage).numbers
        spots = [m for m in re.finditer(r"\b\d+(?:[.,]\d+)*\b", claim)]
        if not spots:
            return None
        m = self.rng.choice(spots)
        token = m.group(0)
        for _ in range(10):
            new = self._other_number(token)
            if new.replace(",", "") not in have:
                return claim[: m.start()] + new + claim[m.end() :]
        return None

    def _other_number(self, token: str) -> str:
        """Another number like ``token``: a nearby year, a small count, a scaled amount."""
        rng = self.rng
        digits = token.replace(",", "")
        if "." in digits:
            value = float(digits) * rng.choice((0.5, 0.7, 1.3, 1.5, 2.0))
            return f"{value:.{len(digits.split('.')[1])}f}"
        n = int(digits)
        if 1000 <= n <= 2100 and len(digits) == 4:
            return str(n + rng.choice((-1, 1)) * rng.randint(1, 40))
        if n < 10:
            return str(rng.choice([k for k in range(1, 13) if k != n]))
        new = max(1, int(n * rng.choice((0.5, 0.6, 0.75, 1.25, 1.5, 2.0, 3.0))))
        if new == n:
            new += 1
        return f"{new:,}" if "," in token else str(new)

    def swap_entity(self, claim: str, passage: str, donor: str) -> str | None:
        """``claim`` with one capitalised name replaced by a name from ``donor``."""
        have = analyse(passage).lemmas
        names = [n for n in find_names(claim) if all(lemma(w) in have for w in n.split())]
        offered = [
            n
            for n in find_names(donor)
            if not any(lemma(w) in have for w in n.split()) and n not in names
        ]
        if not names or not offered:
            return None
        old = self.rng.choice(names)
        new = self.rng.choice(offered)
        return claim.replace(old, new, 1)

    def swap_term(self, claim: str, passage: str, donor: str) -> str | None:
        """``claim`` with one content word replaced by a word of ``donor`` not in the passage."""
        have = analyse(passage)
        words = claim.split()
        spots = [
            i
            for i, w in enumerate(words)
            if plain(w) and len(plain(w)) >= 4 and have.has(lemma(plain(w)))
        ]
        offered = sorted(
            {
                w
                for w in (plain(t) for t in donor.split())
                if len(w) >= 6
                and not have.has(lemma(w))
                and (self.stats is None or self.stats.ratio(lemma(w)) <= RARE)
            }
        )
        if not spots or not offered:
            return None
        i = self.rng.choice(spots)
        old = plain(words[i])
        words[i] = words[i].replace(old, self.rng.choice(offered), 1)
        return articles(" ".join(words))

    def negate(self, claim: str) -> str | None:
        """``claim`` with its polarity flipped (a negation added, or removed)."""
        words = claim.split()
        negated = [i for i, w in enumerate(words) if w.lower().strip(",.") in ("not", "never")]
        if negated:
            return finish([w for i, w in enumerate(words) if i != negated[0]])
        for i, w in enumerate(words):
            if w.lower() in AUX and 0 < i < len(words) - 1:
                return " ".join([*words[: i + 1], "not", *words[i + 1 :]])
        for i, w in enumerate(words[1:-1], start=1):
            if w.islower() and w.endswith("ed") and len(w) > 4:
                return " ".join([*words[:i], "never", *words[i:]])
        return None

    def add_clause(self, claim: str, donor_sentence: str) -> str | None:
        """``claim`` with a clause (from its verb on) of another passage's sentence appended."""
        words = body(donor_sentence).split()
        start = next((i for i, w in enumerate(words) if w.lower() in AUX and i > 0), None)
        if start is None:
            return None
        fragment = words[start:]
        comma = next((i for i, w in enumerate(fragment) if w.endswith(",")), None)
        if comma is not None and comma >= 2:
            fragment = fragment[: comma + 1]
        if len(fragment) > 18:
            cuts = [i for i in range(3, 18) if fragment[i].lower() in CUT_WORDS]
            if not cuts:
                return None
            fragment = fragment[: cuts[-1]]
        if len(fragment) < 3:
            return None
        joiner = self.rng.choice((", and", ", and it", ", and it also", ", while it"))
        return finish([body(claim) + joiner, *fragment])
