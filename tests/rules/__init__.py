"""The pure rules of `_rules/`: what happens after an attempt, with no database or clock."""
