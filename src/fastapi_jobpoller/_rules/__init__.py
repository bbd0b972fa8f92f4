"""Pure rules that decide a state: what an attempt does to a poll, what a tick becomes.

No I/O, no clock reads: every input is a parameter, so each rule is tested by a table.
"""
