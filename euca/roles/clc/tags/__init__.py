"""Tags: records.py owns clc_tags (every resource's tags go through it); api.py answers CreateTags,
DeleteTags and DescribeTags."""
