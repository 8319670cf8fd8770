"""Generation from an export: the command, the Beam job and what they share."""
