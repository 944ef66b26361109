"""Test support shared by several test modules: no tests live here.

Fixtures are registered in ``tests/conftest.py``; helpers are imported as
``from support.<module> import ...``."""
