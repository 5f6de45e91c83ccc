"""Usage accounting: the usage log (records.py, written by the other resources in their transactions), reports
made of it (report.py, pure: events -> intervals -> figures; render.py: CSV, JSON, HTML with SVG charts) and the
admin's HTTP path for them (api.py)."""
