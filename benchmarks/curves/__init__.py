"""The learning-curve benchmark (issue 19): record real fine-tuning curves once, replay searches on them.

``python -m benchmarks.curves record|replay|report``; the protocol is ``PROTOCOL.md`` beside this file.
"""
