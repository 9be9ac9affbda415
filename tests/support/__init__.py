"""The fault and fuzz harness: what tests/test_faults.py and tests/test_fuzz.py import.

    harness.py      the trainer subprocess, checkpoint checks, NaN injections, tmpfs mounts
    scenarios.py    one fault each (kill, stop, diverge, full disk, two trainers, killed prepare)
    faults.py       the long campaign over every fault, printing the table in bench/README.md
    fuzz_inputs.py  byte mutation, valid seed files, a small released-layout root
    fuzz.py         the readers, prepare, config.json and predict's names fed garbage

The long runs, from the repository root:

    python -m tests.support.faults [--kills 10 --signals 3 --fuzz-seconds 60]
    python -m tests.support.fuzz --seconds 60
"""
