"""Instances: records.py owns the reservation and instance tables and the instance rules; reconcile.py is the
pure rule by which the table follows what CCs report; api.py answers the EC2 instance actions, launch.py
RunInstances, render.py the Instance/Reservation structures both answer with.
"""
