"""EBS snapshots (issue 10): kept in Walrus by the SCs, described and shared by the CLC."""
