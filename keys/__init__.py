"""Key management recipes for every party.

Callers use these recipes (load credentials, sign/verify, seal/open, issue
certificates and bindings) and never touch the ``cryptography`` hazmat layer
themselves. Private key files are written 0600 and refused on load when group
or others can read them.
"""

from xinrong.keys.files import read_private_file, write_private_file, write_public_file
from xinrong.keys.sealing import SealingKey, SessionSealer, open_sealed, seal
from xinrong.keys.signing import SigningKey, VerifyKey, key_id_of

__all__ = [
    "SealingKey",
    "SessionSealer",
    "SigningKey",
    "VerifyKey",
    "key_id_of",
    "open_sealed",
    "read_private_file",
    "seal",
    "write_private_file",
    "write_public_file",
]
