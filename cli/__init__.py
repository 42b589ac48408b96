"""`leadsync`: the operator's command line (status, failures, retry, backfill, explain)."""
