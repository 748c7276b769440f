"""The dashboard read API: runs, run detail, workflows, tools, metrics and run comparison, read
from the store through named, bounded queries and served as the read-API doc specifies."""
