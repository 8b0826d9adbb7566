"Fixtures shared by the test files (tests/ mirrors the package tree: tests/<subpackage>/test_<module>.py)."
