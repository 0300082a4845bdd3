"""Test scaffolding: pytest plugins, harnesses and fault injection. Importable
from the repository root only (`python -m pytest`); never part of the wheel."""
