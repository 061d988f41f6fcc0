"""Contrastive steering from prompt pairs: pairs, activation statistics, fit, evaluation."""
