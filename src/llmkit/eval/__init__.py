"""Evaluation: bits per byte, in-context tasks scored by log-likelihood, the lm-eval adapter,
scaling-law sweeps and fits, emergence plots.

This room sits above ``train`` (the scaling sweep trains models through the one loop) and below
``stages``; it scores given text through :mod:`llmkit.infer.scoring`, the one continuation scorer.
"""
