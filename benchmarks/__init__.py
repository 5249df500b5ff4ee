"""The kit's benchmarks against stanford_alpaca's way (``llm4academic bench``; see README.md here).

They ship with the checkout, not with the installed package: ``harness`` runs the cases (one module each,
``p1_preprocess`` … ``p6_study``), ``stanford`` is stanford_alpaca's reference preprocessing, ``gpu.py`` is P5's
script for a GPU machine.
"""
