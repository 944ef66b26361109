"""Joint modeling (联合建模): pure math and protocol logic, no transport.

Vertical federated logistic regression under homomorphic encryption
(coordinated LR, Hardy et al. 2017), private set intersection, scoring,
metrics and reports. Nothing here imports grpc: the node, the bank client
and the provider agent carry these messages over the wire.
"""
