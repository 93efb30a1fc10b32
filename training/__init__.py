"""Training S2D: dataset layouts, the two-stage recipe, SDL, evaluation, distributed runs and export.

Filled by the training issue; it imports models/ and never service/.
"""
