"""Key pairs: records.py owns clc_keypairs and the key rules (formats, fingerprints); api.py answers
CreateKeyPair, ImportKeyPair, DescribeKeyPairs and DeleteKeyPair."""
