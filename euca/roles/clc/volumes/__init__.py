"""EBS volumes (clc_volumes): records.py (the table and its rules), api.py (the EC2 handlers),
reconcile.py (how the table follows what the zone's SC reports; pure)."""
