"""llm4academic: which open foundation model should instruction-tuning research start from?

A study is one params file (``params/<study>.yaml``) run through five notebooks; this package holds the logic.
"""

__version__ = "0.1.0"
