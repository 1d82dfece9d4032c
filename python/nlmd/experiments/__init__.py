"""The paper's experiments, end to end, from nlmd's own commands.

- :mod:`nlmd.experiments.training` — training sets from reference MD and SevenNet models trained on them
  with SevenNet's own trainer (``sevenn``), shipped as checkpoints beside their recipe.
- :mod:`nlmd.experiments.sro_rfix` — the fixed-core SrO experiment (Kang 2024, Fig. 5): reference MD at
  4000 K for each R_fix, every model rescored on exactly those frames, compared, tabulated and plotted.
"""
