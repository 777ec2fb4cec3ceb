"""The CLI checks' tally: expect() prints one ok/FAIL line per check and counts it; summary()
prints the count line and returns the script's exit status."""
failures = []
checks = [0]


def expect(cond, what):
    checks[0] += 1
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def summary():
    print(f"{checks[0] - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0
