"""The cloud's topology: records.py owns the clusters (one per availability zone) and nodes an admin
registers and what the poller last heard from them; api.py answers DescribeRegions,
DescribeAvailabilityZones and DescribeAccountAttributes.
"""
