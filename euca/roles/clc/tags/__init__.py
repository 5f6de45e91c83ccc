"""Tags, the lowest resource package (it imports no other resource): records.py owns clc_tags (every
resource's tags go through it) and defines ResourceKind, which each taggable resource's records module
declares as its TAG_KIND; render.py shows a resource's tags in its answers; api.py answers CreateTags,
DeleteTags and DescribeTags, handed the kinds by euca/roles/clc/__init__.py."""
