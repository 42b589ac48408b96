"""The fault campaign (`make chaos`, `python -m chaos`): LeadSync under faults, checked.

    campaign.py  seed, rounds of edits on both sides, sync under faults, kills and restarts
    oracle.py    the expected final value of every field, from the edit history
    faults.py    faults asked of the emulators and faults they really served
    apphost.py   the app alone in a child process (killed with SIGKILL), driven by its admin API
    infra.py     Azurite on disk on fixed ports (restartable), queue depths
    checks.py    the verdicts and the summary table
"""
