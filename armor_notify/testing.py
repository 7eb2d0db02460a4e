"""Test kit for armor-notify plugin authors (a pytest plugin): fixtures and a conformance suite."""
