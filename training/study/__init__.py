"""Studies of alternatives to the shipped recipe; nothing of the shipped path imports this package.

- the embedder comparison (``neuroauth embedders``): learned embedders, fusion, joint
  training, int8 copies (:mod:`.embedder_study`); importing :mod:`.learned_embedders`
  registers them with the trainer (:mod:`..embedder_registry`), which is how
  ``neuroauth train --embedder NAME`` can fit them;
- the transfer study (``neuroauth study transfer``): normalisations, enrollments and
  score rules on people and corpora never seen (:mod:`.transfer`).
"""
