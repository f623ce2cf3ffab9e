"""The one version string of activation_steering.

pyproject.toml reads it (``[tool.setuptools.dynamic]``), ``activation_steering.__version__``
re-exports it, the CLI prints it for ``--version``, and the tests check that the C
core (``_core.version()``) reports the same string.
"""
__version__ = "0.1.0"
