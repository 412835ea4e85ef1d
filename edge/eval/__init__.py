"""Evaluations (BFCL function calling, guard) run by `edge eval`."""
