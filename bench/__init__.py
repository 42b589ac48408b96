"""LeadSync benchmarks: `python -m bench [--quick]` (see bench/README.md).

Everything runs in one process tree on this machine: Azurite and both emulators (real
limits on) in the benchmark process, the app in its own process (bench/apphost.py) so its
memory can be measured on its own. The product never imports this package.
"""
