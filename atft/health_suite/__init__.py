"""The atft health suite: one pytest item per registered health check.

Run it anywhere after ``pip install atft``::

    pytest --pyargs atft.health_suite -m smoke [--atft-config C] [--atft-data D] [--atft-model M:F]
    atft health smoke [pytest args...]          # the same, as a command

Markers: ``smoke`` (before every training run), ``cuda`` (GPU runners), ``slow`` (quality gates).
"""
