"""atft's built-in health checks, one module per area, each check a function plus its planted
fault (``atft.health.registry.health_check``). The suite (``atft.health_suite``) runs them; the
functions that measure live in ``atft.health.config_checks``, ``dataset_checks``,
``model_checks``, ``train_checks`` and ``gpu``."""
