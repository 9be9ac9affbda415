"""The test suite; tests/support/ holds the fault and fuzz harness it imports."""
