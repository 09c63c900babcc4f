"""Grounding: does a passage support a sentence, and do the passages hold what a question asks?

The critic and the writer share this package. For a sentence (a claim) and a passage it
computes named features and a scikit-learn random forest turns them into
``P(passage supports sentence)``. The forest, its decision threshold and the term statistics it
was trained with come from ``scriptorium critic train`` (:mod:`agents.critic.training`,
``docs/critic.md``) and live in the model cache, under ``<model cache>/critic/grounding/``.

- :mod:`~agents.common.grounding.text`: tokens, lemmas, numbers, names; term statistics.
- :mod:`~agents.common.grounding.questions`: a question's terms and the answer type it wants.
- :mod:`~agents.common.grounding.vector_cache`: embeddings by text, cached.
- :mod:`~agents.common.grounding.features`: the pair features (:data:`FEATURES`).
- :mod:`~agents.common.grounding.model`: the trained model's folder, manifest and forest.
- :mod:`~agents.common.grounding.grounder`: :class:`Grounder`, what the agents call.
"""

from protocol.extras import require

require(
    "retrieval",
    feature="grounding (the writer and the critic)",
    modules=("numpy", "sklearn", "joblib"),
)
