"""Fixtures that run the Ona API simulator for tests."""
