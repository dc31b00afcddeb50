"""Benchmark scripts: they print Markdown tables, save JSON and plots, and never assert times."""
