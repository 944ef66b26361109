"""Homomorphic-encryption backends behind one interface (see ``base``)."""

from modeling.he.base import HEPublic, HESecret, keygen, load_public, SCHEMES

__all__ = ["HEPublic", "HESecret", "keygen", "load_public", "SCHEMES"]
