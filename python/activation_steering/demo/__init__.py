"""The CAST demo (`python -m activation_steering demo`): pipeline.py runs it,
judge.py decides whether a reply is a refusal."""
from .pipeline import DemoData, DemoSettings, format_table, ibm_demo_data, project_data, run

__all__ = ["DemoData", "DemoSettings", "format_table", "ibm_demo_data", "project_data", "run"]
