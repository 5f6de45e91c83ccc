"""Instance types: records.py owns clc_instance_types (Eucalyptus 4.x defaults, editable by admins); api.py
answers DescribeInstanceTypes.
"""
