"""Evaluation: an export scored on the test split against baselines, and its music compared
with the corpus. It sits above the trainer and serving, which never import each other.
"""
