"""The evaluation dev set: questions over the packaged Wikipedia extracts.

Each line of ``devset.jsonl`` is one :class:`DevQuestion`. There are three kinds:

* ``single``: answered by one article (one gold document);
* ``two_doc``: needs two articles (exactly two gold documents), either a bridge ("In which
  city was the writer who created Gregor Samsa born?": the novella's article names the
  writer, the writer's article the city) or a comparison ("Which is older, A or B?": each
  date is in a different article);
* ``unanswerable``: on a topic the corpus covers, but the answer is in none of its 10,033
  extracts (checked against the whole corpus); no gold documents, no answers. The
  ``related_documents`` are the on-topic articles that tempt a wrong answer, so an
  evaluation corpus can include them.

Every accepted answer occurs verbatim (case aside) in a gold article's text.
:func:`answer_matches` tells whether a generated answer contains one of them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

Kind = Literal["single", "two_doc", "unanswerable"]

DEVSET_FILE = "devset.jsonl"
_GOLD_COUNT: dict[str, int] = {"single": 1, "two_doc": 2, "unanswerable": 0}


class DevQuestion(BaseModel):
    """One dev-set question with its gold article ids and accepted answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    question: str
    kind: Kind
    #: Ids (``wiki/<key>``) of the articles that hold the answer; empty for unanswerable.
    gold_documents: list[str] = []
    #: Short accepted answers or aliases (a name, number, date, place); empty for unanswerable.
    answers: list[str] = []
    #: For unanswerable questions: on-topic articles that do not hold the answer.
    related_documents: list[str] = []
    note: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> DevQuestion:
        gold = len(set(self.gold_documents))
        if gold != len(self.gold_documents) or gold != _GOLD_COUNT[self.kind]:
            raise ValueError(
                f"{self.id}: a {self.kind} question has {_GOLD_COUNT[self.kind]} distinct "
                f"gold documents, not {self.gold_documents}"
            )
        if (self.kind == "unanswerable") != (not self.answers):
            raise ValueError(f"{self.id}: only unanswerable questions have no answers")
        if self.related_documents and self.kind != "unanswerable":
            raise ValueError(f"{self.id}: related_documents are for unanswerable questions")
        return self


def load_devset() -> list[DevQuestion]:
    """The committed dev set, read from the installed package."""
    devset = resources.files("scriptorium.evaluation").joinpath(DEVSET_FILE)
    text = devset.read_text(encoding="utf-8")
    return [DevQuestion.model_validate(json.loads(line)) for line in text.splitlines() if line]


# --- Answer matching -------------------------------------------------------------------------

_NUMBER_TEXT = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(_NUMBER_TEXT.split())}
# A thousands separator: a comma (or a narrow / no-break space) between digit groups.
_THOUSANDS = re.compile(r"(?<=\d)[,\u202f\u00a0](?=\d{3}(?!\d))")
# A token: a number (with decimals) or a run of letters and digits.
_TOKEN = re.compile(r"\d+(?:\.\d+)+|[^\W_]+")
# A citation marker of a generated answer: [1], [2, 3] or [2][3].
_CITATION = re.compile(r"\[\d{1,3}(?:\s*[,;]\s*\d{1,3})*\]")


def normalise(text: str) -> list[str]:
    """Tokens of ``text`` for matching: case, accents, punctuation and spacing ignored.

    Thousands separators go ("1,000" -> "1000") and the number words up to twenty become
    digits ("five" -> "5"), so "1,093 patents" and "1093 patents" compare equal.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    plain = _THOUSANDS.sub("", plain)
    return [_NUMBER_WORDS.get(token, token) for token in _TOKEN.findall(plain)]


def _contains(haystack: list[str], needle: list[str]) -> bool:
    width = len(needle)
    return width > 0 and any(
        haystack[i : i + width] == needle for i in range(len(haystack) - width + 1)
    )


def answer_matches(text: str, q: DevQuestion) -> bool:
    """Whether ``text`` contains one of the question's accepted answers (whole tokens).

    Citation markers ("[2]") are dropped first, so that they cannot pass for a number.
    Always false for an unanswerable question: there is nothing to match, so judge those
    by whether the answer declines.
    """
    tokens = normalise(_CITATION.sub(" ", text))
    return any(_contains(tokens, normalise(answer)) for answer in q.answers)
