"""Conditions (CAST): similarity and comparator definitions (similarity.py), the
condition point search (search.py), F1 and FPR-capped thresholds (thresholds.py),
the search's JSON report and plot (report.py)."""
