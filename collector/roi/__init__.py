"""ROI accounting: `/v1/track` events, hours and money saved per task, reports, settings and the
ROI of traced runs; task types come from the shipped catalogue."""
