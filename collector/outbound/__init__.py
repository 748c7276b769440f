"""Outbound HTTP: the SSRF-guarded client every feature uses to call out (webhooks, judge,
attachments), its policy config, and the one durable outbox of deliveries."""
