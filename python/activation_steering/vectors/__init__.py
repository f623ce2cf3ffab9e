"""Steering-vector files and figures: the .svec JSON format (svec.py) and the
PCA analysis figures (plots.py)."""
