"""Evaluation of the question-answering team: the dev set and how answers are matched.

The dev set (``devset.jsonl``, shipped in the wheel) holds questions, the ids of the gold
Wikipedia articles (``wiki/<key>``) and short accepted answers; the article text stays in
its package (see :mod:`scriptorium.corpora`).
"""

from scriptorium.evaluation.devset import DevQuestion, Kind, answer_matches, load_devset

__all__ = ["DevQuestion", "Kind", "answer_matches", "load_devset"]
