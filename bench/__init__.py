"""Benchmarks (`make bench`): tables of ratios measured in one run, never pass/fail tests."""
