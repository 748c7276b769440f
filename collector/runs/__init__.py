"""Runs derived from committed spans: the deriver, its upkeep and overdue scans, the change-feed
loop, and the follower that hands finished runs to their consumers (alerts, ROI, output rules)."""
