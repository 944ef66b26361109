"""Homomorphic-encryption backends behind one interface (see ``base``)."""

from xinrong.modeling.he.base import SCHEMES, HEPublic, HESecret, keygen, load_public

__all__ = ["SCHEMES", "HEPublic", "HESecret", "keygen", "load_public"]
