"""Evaluation: an export scored on the test split against baselines, and its music compared.

The music is compared with the corpus. Evaluation sits above the trainer and serving, which
never import each other.
"""
