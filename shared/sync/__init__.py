"""The sync itself: pollers that find changes, appliers that merge and write them, the
real-time `sync-person` create, and the handling of messages that cannot be applied.
"""
