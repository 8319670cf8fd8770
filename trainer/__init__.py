"""Training the next-note model on a preprocessed dataset, and exporting it."""
