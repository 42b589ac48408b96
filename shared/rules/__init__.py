"""Pure rules: the field map, the per-field merge, validation, eligibility and email matching.

No I/O and nothing of ours but `shared.errors`, so every rule is tested exhaustively on its own.
"""
