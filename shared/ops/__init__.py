"""What an operator sees and does: the health snapshot and page, the quota reading, and the
commands behind `leadsync` (status, failures, retry, backfill, explain).
"""
