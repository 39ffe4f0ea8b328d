"""Honest per-date metrics (IC, RankIC, ICIR, Sharpe) and their inference (bootstrap CI, paired t)."""
