"""LeadSync's sync core: settings, clients, mapping, merge rules, state and validation.

Nothing in here knows about the Functions host; `functions/` adapts triggers to it.
"""
