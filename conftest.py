"""Root pytest configuration: the atft health plugin (options, fixtures, report).

Markers (declared in pyproject.toml, strict): smoke, cuda, slow.
"""

pytest_plugins = ["atft.health.plugin"]
