"""The reliability suite (``make reliability``): launches under injected faults, a canary
sweep for leaked values, residue after every launch, and long fuzzing runs of every
parser, summed up in ``benchmarks/reliability.json``.

- :mod:`.fuzz`: Hypothesis against each parser of untrusted input; only our typed
  errors may come out;
- :mod:`.network`: a network namespace joined to the host by a veth pair (pyroute2),
  packet loss through nftables, the link taken down;
- :mod:`.cluster`: a three-node OpenBao raft cluster whose leader can be killed;
- :mod:`.launches`: the kinds of launch, each with canary values, and how each ended;
- :mod:`.sweep`: where a canary must never be, and what a launch must not leave;
- :mod:`.__main__`: the runner, its table and its JSON.

Its fast part runs in ``make test`` (``tests/test_reliability.py``).
"""
