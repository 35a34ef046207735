"""Reusable conformance checks for model stages (see :mod:`dse.testing.conformance`)."""
