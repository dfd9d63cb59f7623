"""TTP integration tests: the real server process, real swtpm TPMs, real databases.

The fixtures (``ttp_server``, ``ttp_database_url``, ``swtpm_factory``, ...)
come from the plugins registered in ``tests/conftest.py``.
"""
