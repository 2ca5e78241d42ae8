"""One module per fuzz target; runner.py and test_fuzz.py find them here by name."""
