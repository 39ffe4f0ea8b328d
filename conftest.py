"""The repo's own pytest configuration.

The atft health plugin is installed with the package (entry point ``pytest11: atft``), so it is
active here as anywhere; markers ``smoke``, ``cuda``, ``slow`` are declared in pyproject.toml.
"""
