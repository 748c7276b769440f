"""Output evaluation: AI outputs posted to `/api/logs`, judged by deterministic rules and the LLM
judge, reviewed by people, with projects, tasks, callbacks and notifications."""
