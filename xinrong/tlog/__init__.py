"""Transparency logs: RFC 6962 Merkle trees, C2SP signed notes and checkpoints, witnesses.

Ground floor: node, agents, bank and enterprise all verify with this one
module (``merkle`` for proofs, ``note`` for signed checkpoints, ``witness``
for keeping the newest checkpoint seen and catching a split view).
"""
