"""Test helpers shipped with the package, so that tests/ and bench/ share one copy."""
