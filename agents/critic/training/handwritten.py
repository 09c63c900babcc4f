"""A small hand-written check, outside the generator's distribution.

Passages and claims written for this purpose (not corpus text), in the way an answer would
phrase them. "+" supported by its passage, "-" not. Read the figures as a sanity check: 40
claims, and their author also wrote the generator.
"""

from __future__ import annotations

import numpy as np

from agents.critic.training.detection import Floats, detection_metrics

HANDWRITTEN: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "The Danube is Europe's second-longest river after the Volga. It rises in the Black "
        "Forest in Germany and flows for about 2,850 kilometres to the Black Sea. Along the way "
        "it passes through four capital cities: Vienna, Bratislava, Budapest and Belgrade.",
        (
            "+The Danube flows into the Black Sea.",
            "+The Danube is about 2,850 km long.",
            "+Vienna and Budapest both lie on the Danube.",
            "+The river begins in Germany's Black Forest.",
            "-The Danube flows for about 3,850 kilometres.",
            "-The Danube passes through Prague.",
            "-The Danube does not reach the Black Sea.",
        ),
    ),
    (
        "Marie Curie was a physicist and chemist who carried out pioneering research on "
        "radioactivity. Born in Warsaw in 1867, she moved to Paris to study and later worked "
        "there for most of her life. She was the first woman to win a Nobel Prize and the only "
        "person to win Nobel Prizes in two different sciences, physics in 1903 and chemistry "
        "in 1911.",
        (
            "+Marie Curie was born in Warsaw.",
            "+Curie won the Nobel Prize in Chemistry in 1911.",
            "+She was the first woman to be awarded a Nobel Prize.",
            "+Curie relocated to Paris to study.",
            "-Marie Curie was born in Vienna in 1867.",
            "-Curie won the Nobel Prize in Physics in 1905.",
            "-Curie was never awarded a Nobel Prize.",
            "-Curie discovered penicillin in 1928.",
        ),
    ),
    (
        "Photosynthesis is the process by which green plants, algae and some bacteria turn "
        "light energy into chemical energy. Using sunlight, they combine carbon dioxide and "
        "water to make glucose, releasing oxygen as a by-product. In plants the process takes "
        "place mainly in the chloroplasts of leaf cells.",
        (
            "+Photosynthesis releases oxygen as a by-product.",
            "+Plants use sunlight to make glucose from carbon dioxide and water.",
            "+In plants, photosynthesis happens mostly in chloroplasts.",
            "-Photosynthesis releases carbon dioxide as a by-product.",
            "-Photosynthesis takes place mainly in the mitochondria.",
            "-Photosynthesis was discovered by Jan Ingenhousz in 1779.",
        ),
    ),
    (
        "The Great Wall of China is a series of fortifications built across the historical "
        "northern borders of ancient Chinese states. Construction began as early as the 7th "
        "century BC, and the best-known sections were built by the Ming dynasty between 1368 "
        "and 1644. Including all its branches, the wall is estimated to be about 21,000 "
        "kilometres long.",
        (
            "+The best-known parts of the Great Wall were built during the Ming dynasty.",
            "+The Great Wall is roughly 21,000 km long if all its branches are counted.",
            "+Work on the wall started as early as the 7th century BC.",
            "-The best-known sections were built by the Han dynasty.",
            "-The Great Wall is about 12,000 kilometres long.",
            "-The Great Wall is visible from the Moon with the naked eye.",
        ),
    ),
    (
        "Python is a high-level programming language created by Guido van Rossum and first "
        "released in 1991. Its design emphasises code readability, notably through significant "
        "indentation. Python supports several programming paradigms, including procedural, "
        "object-oriented and functional programming.",
        (
            "+Python was created by Guido van Rossum.",
            "+Python was first released in 1991.",
            "+Python supports object-oriented and functional programming.",
            "-Python was created by James Gosling.",
            "-Python was first released in 1995.",
            "-Python does not support functional programming.",
            "-Python is the most popular language for web browsers.",
        ),
    ),
    (
        "The Amazon rainforest covers much of the Amazon basin of South America, an area of "
        "about 5.5 million square kilometres. The majority of the forest lies within Brazil, "
        "with smaller parts in Peru, Colombia and seven other countries. It is the largest "
        "tropical rainforest in the world and hosts an enormous variety of species.",
        (
            "+Most of the Amazon rainforest is in Brazil.",
            "+The Amazon is the world's biggest tropical rainforest.",
            "+The rainforest covers about 5.5 million square kilometres.",
            "-Most of the Amazon rainforest is in Argentina.",
            "-The Amazon rainforest covers about 7.5 million square kilometres.",
            "-The Amazon rainforest produces 20 percent of the world's oxygen.",
        ),
    ),
)


def handwritten_pairs() -> list[tuple[str, str, str]]:
    """Every :data:`HANDWRITTEN` claim against every passage, as (claim, passage, "")."""
    passages = [p for p, _ in HANDWRITTEN]
    return [(c[1:], p, "") for _, claims in HANDWRITTEN for c in claims for p in passages]


def evaluate_handwritten(scores: Floats, threshold: float) -> dict[str, float]:
    """Figures on :data:`HANDWRITTEN` from ``scores`` of :func:`handwritten_pairs` (in order):
    each claim against its own passage (P/R/F1 of unsupported detection, false-reject rate),
    supported claims against every other passage (``wrong_passage_rejected``), and whether a
    supported claim's best passage is its own (``best_passage_accuracy``)."""
    n = len(HANDWRITTEN)
    claims = [(c[0] == "+", i) for i, (_, cs) in enumerate(HANDWRITTEN) for c in cs]
    table = scores.reshape(len(claims), n)
    own = np.array([table[k, i] for k, (_, i) in enumerate(claims)])
    supported = np.array([s for s, _ in claims])
    metrics = detection_metrics(own, supported, threshold)
    others = [table[k, j] for k, (s, i) in enumerate(claims) if s for j in range(n) if j != i]
    metrics["wrong_passage_rejected"] = float(np.mean(np.asarray(others) < threshold))
    best = [int(np.argmax(table[k])) == i for k, (s, i) in enumerate(claims) if s]
    metrics["best_passage_accuracy"] = float(np.mean(best))
    metrics["claims"] = float(len(claims))
    return metrics
